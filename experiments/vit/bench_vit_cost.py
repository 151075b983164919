"""What a ViT costs against the study's ResNet-18: FLOPs per image and a training step's time.

For each backbone option (the study's ``resnet18_imagenet_stem`` first, as the reference, then
the ViT options and any ``--vit`` variants), at the study's input (28 px, one channel) or
another ``--size``:

- forward GFLOPs per image, counted by ``torch.utils.flop_counter`` (a multiply-add is 2 FLOPs);
- milliseconds of one SimCLR-style training step (two views of a batch, forward, backward and an
  SGD step of the backbone with a linear projection), the median over ``--steps`` timed steps
  after ``--warmup`` untimed ones, and the ratio to the reference.

    python experiments/vit/bench_vit_cost.py [--size 28] [--batch 256] [--steps 5]
    python experiments/vit/bench_vit_cost.py --vit depth=4 --vit image_size=32,patch_size=4

A ``--vit`` variant is ``key=value`` pairs on top of ``backbone=vit_cpu``. Published figures
come from a run with nothing else on the machine (the README beside this script).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sslkit.config import config_dir, register_configs

REFERENCE = "resnet18_imagenet_stem"
OPTIONS = ("vit_cpu",)


def build(option: str, overrides: list[str], in_channels: int) -> nn.Module:
    """The backbone of ``conf/backbone/<option>.yaml`` with ``backbone.<key>=<value>`` overrides."""
    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", [f"backbone={option}", *(f"backbone.{o}" for o in overrides)])
    torch.manual_seed(0)
    return instantiate(cfg.backbone, in_channels=in_channels)


def forward_gflops(backbone: nn.Module, images: torch.Tensor) -> float:
    """Forward GFLOPs per image."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        backbone(images)
    return counter.get_total_flops() / len(images) / 1e9


def step_ms(backbone: nn.Module, images: torch.Tensor, steps: int, warmup: int) -> float:
    """Median milliseconds of a two-view training step (forward, backward, SGD step)."""
    head = nn.Linear(backbone.feature_dim, 128)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.01)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        features = head(backbone(torch.cat([images, images.flip(-1)])))
        features.square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=28, help="input side in pixels")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256, help="images per view")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--vit", action="append", default=[], help="vit_cpu with key=value,...")
    args = parser.parse_args()
    images = torch.rand(args.batch, args.channels, args.size, args.size)
    rows = [(REFERENCE, []), *((o, []) for o in OPTIONS)]
    rows += [("vit_cpu", variant.split(",")) for variant in args.vit]
    print(
        f"{args.size} px, {args.channels} channel(s), batch {args.batch} x 2 views, "
        f"{torch.get_num_threads()} threads; torch {torch.__version__}"
    )
    print(f"{'backbone':<48} {'params':>8} {'GFLOPs/img':>10} {'step ms':>8} {'x ref':>6}")
    reference_ms = None
    for option, overrides in rows:
        backbone = build(option, overrides, args.channels)
        params = sum(p.numel() for p in backbone.parameters()) / 1e6
        gflops = forward_gflops(backbone, images[:8])
        ms = step_ms(backbone, images, args.steps, args.warmup)
        reference_ms = reference_ms or ms
        name = " ".join([option, *overrides])
        print(f"{name:<48} {params:>7.2f}M {gflops:>10.3f} {ms:>8.0f} {ms / reference_ms:>5.2f}x")


if __name__ == "__main__":
    main()
