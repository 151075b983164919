"""Every method on ResNet-18 (and SimCLR on a ViT-Tiny) and CIFAR-10-shaped data on one GPU:
image pairs (of the global views) per second and peak memory.

SimCLR and BYOL run their CIFAR-10 presets (`simclr_resnet18_cifar10`, `byol_resnet18_cifar10`);
the methods without one run their Fashion-MNIST recipe (`<method>_resnet18_fashion_mnist`: heads,
loss, optimiser) with the CIFAR stem (`backbone=resnet18`), and SupCon is SimCLR's CIFAR-10 preset
with `method.positives=labels`; DINO and SwAV take their multi-crop views (two global, four
local crops), and `simclr_vit` is SimCLR's CIFAR-10 preset on `vit_tiny` with 4 px patches. All of them with the batched views on the device and bf16
autocast, on in-memory 32 px RGB images (the synthetic shapes, so no download is needed), batch
512, for a fixed number of optimiser steps after a warmup.

    python experiments/throughput/gpu_throughput.py                  # on a GPU
    python experiments/throughput/gpu_throughput.py --cpu --steps 2 --warmup 1 --batch 16

The second line runs the same path on the CPU in seconds (the test suite does, so the script
keeps working on machines without a GPU); there the queues and support sets hold four batches, and
the precision is 32-true: a CPU without bf16 units (AVX2 only) emulates bf16, which made this
smoke run eleven times as long.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_throughput import sslkit_end_to_end  # noqa: E402

#: Method -> its preset and the overrides that put it on the CIFAR-10 stem and data.
PRESETS = {
    "simclr": ("simclr_resnet18_cifar10", []),
    "byol": ("byol_resnet18_cifar10", []),
    "supcon": ("simclr_resnet18_cifar10", ["method.positives=labels"]),
    **{
        method: (f"{method}_resnet18_fashion_mnist", ["backbone=resnet18"])
        for method in (
            "mocov2",
            "mocov3",
            "simsiam",
            "barlowtwins",
            "vicreg",
            "nnclr",
            "dino",
            "swav",
        )
    },
    # SimCLR's CIFAR-10 recipe on a ViT-Tiny with 4 px patches (64 tokens), AdamW.
    "simclr_vit": (
        "simclr_resnet18_cifar10",
        [
            "backbone=vit_tiny",
            "backbone.image_size=32",
            "backbone.patch_size=4",
            "optim=adamw",
            "optim.lr=1e-3",
        ],
    ),
}
#: Backbones without convolutions to store channels-last.
NO_CHANNELS_LAST = {"simclr_vit"}
#: The method key of a bank of past embeddings, which a CPU smoke run's few images must fill.
BANKS = {"mocov2": "queue_size", "nnclr": "support_set_size", "swav": "queue_size"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="timed optimiser steps")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (a smoke test)")
    parser.add_argument("--methods", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        parser.error(
            "no GPU found; pass --cpu (with a small --steps and --batch) to run on the CPU"
        )
    precision = "32-true" if args.cpu else "bf16-mixed"
    images = args.batch * (args.steps + args.warmup + 1)
    data = [
        "data=synthetic",
        "data.source.image_size=32",
        f"data.source.num_train={max(images, 1024)}",
        "data.source.num_test=64",
        "augment.backend=batched",
        f"trainer.precision={precision}",
    ]
    device = ["trainer=cpu"] if args.cpu else ["trainer=gpu", "trainer.devices=1"]
    name = "CPU" if args.cpu else torch.cuda.get_device_name()
    print(f"{name}; batch {args.batch}; {args.steps} timed steps after {args.warmup}; {precision}")
    for method in args.methods:
        preset, overrides = PRESETS[method]
        if method not in NO_CHANNELS_LAST:
            overrides = ["backbone.channels_last=true", *overrides]
        if args.cpu and method in BANKS:
            overrides = [*overrides, f"method.{BANKS[method]}={4 * args.batch}"]
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        rate = sslkit_end_to_end(
            [*device, *data, *overrides], args.steps, args.warmup, args.batch, preset=preset
        )
        memory = (
            f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak"
            if torch.cuda.is_available() and not args.cpu
            else "CPU"
        )
        print(f"{method} ({' '.join([preset, *overrides])}): {rate:,.0f} pairs/s, {memory}")


if __name__ == "__main__":
    main()
