"""Pretraining throughput: sslkit end to end against a minimal SimCLR loop and the model step.

In one process, on the same machine and data (Fashion-MNIST 28 px, batch 256, ResNet-18),
it measures pairs of views per second of:

- reference: a minimal SimCLR loop built from lightly's blocks (SimCLRTransform with PIL in one
  DataLoader worker, NTXentLoss, SGD, fp32), as a researcher would write it;
- sslkit: `experiment=simclr_resnet18_fashion_mnist` through Lightning, for each augmentation
  backend (batched on the device, PIL in workers) and precision;
- model step: forward, backward and optimiser step on random tensors (the limit for a precision);
- augmentation alone, on one core: sslkit's batched views against lightly's PIL transform, at
  28 px grayscale and 32 px RGB, for SimCLR's two views and for DINO's multi-crop set.

    python experiments/throughput/bench_throughput.py [--steps 30] [--warmup 5] [--rounds 3]
    python experiments/throughput/bench_throughput.py --augmentation-only   # those rows alone

Every row (pretraining and augmentation alone) runs once in each of ``--rounds`` rounds and
reports its median over the rounds, so that a machine whose speed drifts for a minute (a shared
virtual machine) moves every row alike instead of the one that happened to run then. Published
figures come from a run on an otherwise idle machine (README next to this script).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torchvision
from hydra import compose, initialize_config_dir
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.transforms import DINOTransform, SimCLRTransform
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from sslkit.augment import multicrop_views, simclr_views
from sslkit.build import build_datamodule, build_method
from sslkit.config import config_dir, register_configs
from sslkit.data import FashionMNIST, SyntheticShapes
from sslkit.losses import info_nce
from sslkit.methods.base import SSLMethod
from sslkit.models import ResNet

PRESET = "simclr_resnet18_fashion_mnist"
REFERENCE = "reference loop (lightly, PIL in 1 worker, fp32)"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fashion_mnist_or_synthetic(num_train: int):
    """Fashion-MNIST's train split when it is installed, else synthetic grayscale 28 px shapes."""
    try:
        return FashionMNIST().build("train"), "fashion_mnist"
    except FileNotFoundError:
        shapes = SyntheticShapes(num_train=num_train, num_test=16, image_size=28)
        train = shapes.build("train")
        gray = (train.images.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)
        train.images = gray
        return train, "synthetic (Fashion-MNIST not installed)"


class Timer(pl.Callback):
    """Wall time from the end of the warmup steps (from the start of training without any) to
    the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.stop, self.steps = warmup, 0.0, 0.0, 0

    def on_train_start(self, trainer, module) -> None:
        if not self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == self.warmup:
            self.start = time.perf_counter()
        elif batch_idx + 1 > self.warmup:
            self.stop, self.steps = time.perf_counter(), self.steps + 1


def compose_preset(preset: str, batch: int, overrides: Sequence[str] = ()) -> DictConfig:
    """The train config of ``preset`` at batch ``batch`` with ``overrides``, as sslkit-train
    composes it."""
    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(
            "train",
            overrides=[f"experiment={preset}", f"data.batch_size={batch}", *overrides],
        )


def fit_preset(
    cfg: DictConfig,
    callbacks: Sequence[pl.Callback] = (),
    datamodule: pl.LightningDataModule | None = None,
    **trainer_args: Any,
) -> tuple[SSLMethod, pl.LightningDataModule]:
    """The method of ``cfg`` trained through Lightning from the config's ``seed`` (0 when it has
    none), on ``datamodule`` (the config's own when None) for ``cfg.trainer.max_epochs`` unless
    ``trainer_args`` say otherwise; without validation, logger or checkpoints, so that only
    training is timed."""
    pl.seed_everything(int(cfg.get("seed", 0)), verbose=False)
    if datamodule is None:
        datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    method = build_method(cfg, datamodule)
    settings = {
        "accelerator": cfg.trainer.accelerator,
        "devices": 1,
        "benchmark": cfg.trainer.get("benchmark"),
        "precision": cfg.trainer.precision,
        "max_epochs": cfg.trainer.max_epochs,
        "limit_val_batches": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": list(callbacks),
    }
    trainer = pl.Trainer(**(settings | trainer_args))
    trainer.fit(method, datamodule=datamodule)
    return method, datamodule


def sslkit_end_to_end(
    overrides: list[str], steps: int, warmup: int, batch: int, preset: str = PRESET
) -> float:
    """Pairs/s of a preset through Lightning (data, views, step, optimiser, logging)."""
    timer = Timer(warmup)
    cfg = compose_preset(preset, batch, overrides)
    fit_preset(cfg, [timer], max_epochs=1, limit_train_batches=warmup + steps)
    return batch * timer.steps / (timer.stop - timer.start)


def reference_loop(train, steps: int, warmup: int, batch: int) -> float:
    """Pairs/s of a minimal SimCLR written from lightly's blocks (PIL views in 1 worker)."""
    torch.manual_seed(0)
    transform = SimCLRTransform(input_size=28, gaussian_blur=0.0, cj_strength=0.5, min_scale=0.2)

    class Views(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(train)

        def __getitem__(self, index: int):
            image, label = train[index]
            return transform(image.convert("RGB")), label

    loader = torch.utils.data.DataLoader(
        Views(), batch_size=batch, shuffle=True, drop_last=True, num_workers=1
    )
    backbone = torchvision.models.resnet18()
    backbone.fc = nn.Identity()
    model = nn.Sequential(backbone, SimCLRProjectionHead(512, 512, 128))
    criterion = NTXentLoss(temperature=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    start, done = 0.0, 0
    for step, ((x0, x1), _) in enumerate(loader):
        loss = criterion(model(x0), model(x1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step + 1 == warmup:
            start = time.perf_counter()
        elif step + 1 > warmup:
            done += 1
            if done == steps:
                break
    return batch * done / (time.perf_counter() - start)


def model_step(
    precision: str, steps: int, warmup: int, batch: int, channels_last: bool = True
) -> float:
    """Pairs/s of forward + backward + SGD step alone, on random 1 x 28 x 28 tensors, with the
    backbone's weights channels-last (sslkit's default) or contiguous (torchvision's)."""
    torch.manual_seed(0)
    backbone = ResNet(depth=18, in_channels=1, small_input=False, channels_last=channels_last)
    head = SimCLRProjectionHead(512, 512, 128)
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.06, momentum=0.9)
    x = torch.randn(2 * batch, 1, 28, 28)
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            z_a, z_b = head(backbone(x)).float().chunk(2)
            loss = info_nce(z_a, z_b, 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return batch * steps / (time.perf_counter() - start)


def per_core(fn: Callable[[], None], images: int, seconds: float) -> float:
    """Images/s of ``fn`` (which makes views of ``images`` images) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn()
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            fn()
            count += images
        return count / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def _each(transform: Callable, images: list[Image.Image]) -> None:
    for image in images:
        transform(image)


def _kornia_views(size: int, channels: int, stats: dict) -> Callable | None:
    """The same two views with kornia.augmentation (the alternative to sslkit's batched
    views that was measured), or None when kornia is not installed."""
    try:
        import kornia.augmentation as K
    except ImportError:
        print("kornia is not installed (pip install kornia): its row is skipped")
        return None
    jitter = (0.4, 0.4, 0.4, 0.1) if channels == 3 else (0.4, 0.4, 0.0, 0.0)
    steps = [
        K.RandomResizedCrop((size, size), scale=(0.2, 1.0)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(*jitter, p=0.8),
        *([K.RandomGrayscale(p=0.2)] if channels == 3 else []),
        K.Normalize(mean=torch.tensor(stats["mean"]), std=torch.tensor(stats["std"])),
    ]
    pipeline = K.AugmentationSequential(*steps)

    def views(images: torch.Tensor) -> list[torch.Tensor]:
        x = images.float() / 255
        return [pipeline(x), pipeline(x)]

    return views


def _multicrop_pair(size: int, channels: int, stats: dict) -> tuple[Callable, Callable]:
    """sslkit's multi-crop views and lightly's DINOTransform at the same crop counts, sizes,
    scales and probabilities: 2 global 28 px crops and 4 local 12 px ones, no blur, in
    grayscale; DINO's own (2 global, 6 local at 96/224 of the size,
    its blur) in RGB."""
    if channels == 1:
        crops = {"local_crops": 4, "local_size": 12, "local_scale": (0.1, 0.4)}
        blur = (0.0, 0.0, 0.0)
    else:
        crops = {"local_crops": 6, "local_size": round(size * 96 / 224), "local_scale": (0.05, 0.4)}
        blur = (1.0, 0.1, 0.5)
    views = multicrop_views(
        image_size=size,
        global_crops=2,
        global_scale=(0.4, 1.0),
        gaussian_blur=blur,
        **crops,
        **stats,
    )
    lightly = DINOTransform(
        global_crop_size=size,
        global_crop_scale=(0.4, 1.0),
        local_crop_size=crops["local_size"],
        local_crop_scale=crops["local_scale"],
        n_local_views=crops["local_crops"],
        gaussian_blur=blur,
        normalize={"mean": list(stats["mean"]), "std": list(stats["std"])},
    )
    return views, lightly


def augmentation_alone(seconds: float, batch: int, rounds: int) -> dict[str, float]:
    """Images per second on one core (a pair of SimCLR views, or one image's multi-crop set):
    batched vs lightly's PIL transform (the median of ``rounds`` alternated measurements of
    ``seconds`` each)."""
    results: dict[str, list[float]] = {}
    rng = np.random.default_rng(0)
    jobs = {}
    for channels, size in ((1, 28), (3, 32)):
        stats = {"mean": (0.5,) * channels, "std": (0.25,) * channels, "in_channels": channels}
        views = simclr_views(image_size=size, min_scale=0.2, **stats)
        images = torch.from_numpy(rng.integers(0, 256, (batch, channels, size, size), np.uint8))
        pil = [Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()) for img in images]
        lightly = SimCLRTransform(
            input_size=size,
            gaussian_blur=0.0,
            cj_strength=0.5,
            min_scale=0.2,
            normalize={"mean": stats["mean"], "std": stats["std"]},
        )
        key = f"{size}px {'gray' if channels == 1 else 'rgb'}"
        jobs[f"batched {key}"] = partial(views.batch, images)
        jobs[f"lightly PIL {key}"] = partial(_each, lightly, pil)
        kornia_views = _kornia_views(size, channels, stats)
        if kornia_views is not None:
            jobs[f"kornia {key}"] = partial(kornia_views, images)
        crops, lightly_crops = _multicrop_pair(size, channels, stats)
        jobs[f"batched {key} multi-crop"] = partial(crops.batch, images)
        jobs[f"lightly PIL {key} multi-crop"] = partial(_each, lightly_crops, pil)
    for _ in range(rounds):
        for name, job in jobs.items():
            results.setdefault(name, []).append(per_core(job, batch, seconds))
    return {name: statistics.median(values) for name, values in results.items()}


def report_augmentation(augment: dict[str, float]) -> None:
    """Print the augmentation-alone rows and the batched path's ratio to each alternative."""
    print(f"\n{'augmentation alone, 1 core':<40}  images/s")
    for name, value in augment.items():
        print(f"{name:<40}  {value:7.0f}")
    for key in ("28px gray", "32px rgb", "28px gray multi-crop", "32px rgb multi-crop"):
        for other in ("lightly PIL", "kornia"):
            if f"{other} {key}" in augment:
                ratio = augment[f"batched {key}"] / augment[f"{other} {key}"]
                print(f"batched / {other} at {key}: {ratio:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed optimiser steps per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--aug-seconds", type=float, default=3.0)
    parser.add_argument("--backends", nargs="+", default=["batched", "pil"])
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--augmentation-only", action="store_true", help="only the augmentation-alone rows"
    )
    parser.add_argument(
        "--model-step-only",
        action="store_true",
        help="only the model-step rows, channels-last against contiguous weights",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.augmentation_only:
        report_augmentation(augmentation_alone(args.aug_seconds, args.batch, args.rounds))
        return
    run = {"steps": args.steps, "warmup": args.warmup, "batch": args.batch}
    jobs: dict[str, Callable[[], float]] = {}
    if args.model_step_only:
        data_name = "random tensors"
    else:
        train, data_name = fashion_mnist_or_synthetic(args.batch * (args.steps + args.warmup + 1))
        jobs[REFERENCE] = partial(reference_loop, train, **run)
        for backend in args.backends:
            for precision in args.precisions:
                overrides = [f"augment.backend={backend}", f"trainer.precision={precision}"]
                name = f"sslkit {PRESET} backend={backend} precision={precision}"
                jobs[name] = partial(sslkit_end_to_end, overrides, **run)
    print(f"data: {data_name}; batch {args.batch}; {args.steps} timed steps after {args.warmup}")
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for precision in args.precisions:
        jobs[f"model step alone, {precision}"] = partial(model_step, precision, **run)
        jobs[f"model step alone, {precision}, contiguous"] = partial(
            model_step, precision, channels_last=False, **run
        )
    rounds: dict[str, list[float]] = {name: [] for name in jobs}
    for round_index in range(args.rounds):
        for name, job in jobs.items():
            rounds[name].append(job())
        print(f"round {round_index + 1}: " + ", ".join(f"{v[-1]:.0f}" for v in rounds.values()))
    rows = {name: statistics.median(values) for name, values in rounds.items()}
    reference = rows.get(REFERENCE)
    width = max(map(len, rows))
    print(f"\n{'pretraining':<{width}}  pairs/s  vs reference  vs model step")
    for name, value in rows.items():
        precision = "bf16-mixed" if "bf16" in name else "32-true"
        limit = rows.get(f"model step alone, {precision}")
        share = f"{value / limit:12.0%}" if limit else f"{'-':>12}"
        versus = f"{value / reference:11.2f}x" if reference else f"{'-':>12}"
        print(f"{name:<{width}}  {value:7.0f}  {versus}  {share}")
    augment = {}
    if not args.model_step_only:
        augment = augmentation_alone(args.aug_seconds, args.batch, args.rounds)
        report_augmentation(augment)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "data": data_name,
                    **run,
                    "pretraining": rows,
                    "rounds": rounds,
                    "augmentation": augment,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
