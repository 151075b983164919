#!/usr/bin/env bash
# The Fashion-MNIST study (README.md beside this file): every method's preset as shipped (ResNet-18,
# batch 256, 10 epochs over the 60k training images, seed 0), the same evaluation on the 10k test
# images with low-shot linear probes (1 % and 10 % of the training labels), one row after another.
#   bash experiments/fashion_mnist/run_study.sh [out_dir] [extra overrides for every row...]
# A row whose results.json exists is skipped, so an interrupted study continues where it stopped
# (a row cut short restarts from its last checkpoint: resume=true). Extra overrides shrink it for a
# smoke run, e.g. `data.max_train=2048 data.max_test=1024 trainer.max_epochs=1`.
# Times only mean something when nothing else runs on the machine; `touch <out_dir>/PAUSE` holds the
# study before its next row until the file is removed.
set -euo pipefail
out=${1:-outputs/fashion_mnist_study}
shift || true
failed=()  # a failed row does not stop the others; the study exits non-zero at the end
evaluation=(seed=0 logger=none eval.plots=false "eval.linear.label_fractions=[0.01,0.1,1.0]")
common=("${evaluation[@]}" "$@")

due() {  # whether row $1 still has to run; waits while the study is paused
  if [[ -f $out/$1/results.json ]]; then echo "skip $1 (done)"; return 1; fi
  while [[ -e $out/PAUSE ]]; do sleep 15; done
  echo "== $1: $(date -u +%FT%TZ)"
}
train() {
  local name=$1; shift
  due "$name" || return 0
  sslkit-train "$@" "${common[@]}" "hydra.run.dir=$out/$name" || failed+=("$name")
}
teacher() {  # the BYOL checkpoint again, features from the EMA teacher (on the data it trained on)
  due byol_teacher || return 0
  sslkit-eval "ckpt_path=$out/byol/checkpoints/last.ckpt" eval.encoder=teacher "${evaluation[@]}" \
    "hydra.run.dir=$out/byol_teacher" || failed+=(byol_teacher)
}

# The SimCLR row also evaluates raw pixels and the untrained ResNet-18 (its `baselines`).
train simclr experiment=simclr_resnet18_fashion_mnist
train supervised experiment=supervised_resnet18_fashion_mnist baselines=[]
train triplet_views experiment=triplet_resnet18_fashion_mnist baselines=[]
train byol experiment=byol_resnet18_fashion_mnist baselines=[]
teacher
train inpainting_patches experiment=inpainting_resnet18_fashion_mnist method.mask.mode=patches baselines=[]
train pairwise_views experiment=pairwise_resnet18_fashion_mnist baselines=[]
# Labels modes: positives are same-class images; one mild view (the supervised row's augment, crops
# of at least half the image), as on the shapes.
train triplet_labels experiment=triplet_resnet18_fashion_mnist method.positives=labels augment=supervised augment.min_scale=0.5 baselines=[]
train pairwise_labels experiment=pairwise_resnet18_fashion_mnist method.positives=labels augment=supervised augment.min_scale=0.5 baselines=[]
train inpainting_block experiment=inpainting_resnet18_fashion_mnist method.mask.mode=block baselines=[]
if ((${#failed[@]})); then echo "failed rows: ${failed[*]}" >&2; exit 1; fi
