#!/usr/bin/env bash
# Fashion-MNIST study at the reduced CPU budget (see README.md beside this file): every method with
# the same backbone, batch, epochs, data subset, seed and evaluation protocol.
#   bash experiments/fashion_mnist/run_cpu_budget.sh [out_dir]
set -euo pipefail
out=${1:-outputs/fashion_mnist_cpu_budget}
budget=(data.max_train=2048 data.max_test=1024 trainer.max_epochs=2 backbone.small_input=false
        data.num_workers=2 seed=0 trainer.enable_progress_bar=false logger=csv)
train() { local name=$1; shift; sslkit-train "$@" "${budget[@]}" "hydra.run.dir=$out/$name"; }

train simclr experiment=simclr_resnet18_fashion_mnist
train pairwise_views experiment=pairwise_resnet18_fashion_mnist method.positives=views method.mining=random baselines=[]
train pairwise_labels experiment=pairwise_resnet18_fashion_mnist method.positives=labels method.mining=random baselines=[]
train triplet_views experiment=triplet_resnet18_fashion_mnist method.positives=views method.mining=semihard baselines=[]
train triplet_labels experiment=triplet_resnet18_fashion_mnist method.positives=labels method.mining=semihard baselines=[]
train supervised experiment=supervised_resnet18_fashion_mnist baselines=[]
train byol experiment=byol_resnet18_fashion_mnist baselines=[]
sslkit-eval "ckpt_path=$out/byol/checkpoints/last.ckpt" eval.encoder=teacher seed=0 \
  "hydra.run.dir=$out/byol_teacher"
train inpainting_patches experiment=inpainting_resnet18_fashion_mnist method.mask.mode=patches baselines=[]
train inpainting_block experiment=inpainting_resnet18_fashion_mnist method.mask.mode=block baselines=[]
