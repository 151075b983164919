"""``sslkit-eval``: evaluate a pretraining checkpoint with the named protocols.

sslkit-eval ckpt_path=outputs/pretrain/<run>/checkpoints/last.ckpt eval=[knn]
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from sslkit.config import config_dir, register_configs
from sslkit.loggers import log_config
from sslkit.methods.base import SSLMethod
from sslkit.models.backbones import describe
from sslkit.pipeline import (
    build_datamodule,
    build_method,
    evaluate_and_report,
    resolve_device,
)
from sslkit.train import objective, run_and_report

log = logging.getLogger(__name__)
register_configs()


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint written by ``sslkit-train``, refusing files it did not write."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"checkpoint {file} does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt"
        )
    checkpoint = torch.load(file, map_location="cpu", weights_only=False)
    if "sslkit_config" not in checkpoint:
        raise ValueError(f"{file} holds no sslkit run config; was it written by sslkit-train?")
    return checkpoint


def run_config(cfg: DictConfig, checkpoint: dict[str, Any]) -> DictConfig:
    """The training run's config, with this evaluation's data, eval, seed and baselines."""
    merged = OmegaConf.create(checkpoint["sslkit_config"])
    with open_dict(merged):
        if cfg.get("data") is not None:
            merged.data = cfg.data
        merged.eval = cfg.eval
        merged.seed = cfg.seed
        merged.baselines = cfg.baselines
    return merged


def restore_method(cfg: DictConfig, checkpoint: dict[str, Any]) -> tuple[SSLMethod, Any]:
    """The datamodule and method of ``cfg``, with the checkpoint's trained weights."""
    datamodule = build_datamodule(cfg)
    method = build_method(cfg, datamodule)
    expected = checkpoint.get("sslkit_backbone")
    if expected is not None and describe(method.backbone) != expected:
        raise ValueError(
            f"the checkpoint's backbone {expected} does not match the configured one "
            f"{describe(method.backbone)}; evaluate with the backbone it was trained with"
        )
    method.load_state_dict(checkpoint["state_dict"])
    return method, datamodule


class LoadedRun(NamedTuple):
    """A trained method (in eval mode), the datamodule it was trained on and its run config."""

    method: SSLMethod
    datamodule: Any
    config: DictConfig


def load_method(ckpt_path: str | Path) -> LoadedRun:
    """Load a checkpoint written by ``sslkit-train`` for analysis (notebooks, scripts).

    Builds the method and data from the config stored in the checkpoint, the same way
    ``sslkit-eval`` does.
    """
    checkpoint = load_checkpoint(str(ckpt_path))
    config = OmegaConf.create(checkpoint["sslkit_config"])
    method, datamodule = restore_method(config, checkpoint)
    return LoadedRun(method.eval(), datamodule, config)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` and write ``results.json`` into this run's directory."""
    start = time.perf_counter()
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    run_cfg = run_config(cfg, checkpoint)
    method, datamodule = restore_method(run_cfg, checkpoint)
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    log_config(logger, run_cfg)
    return evaluate_and_report(
        run_cfg,
        method=method,
        datamodule=datamodule,
        output_dir=output_dir,
        device=resolve_device(cfg.eval.device),
        logger=logger,
        timings={"load_s": time.perf_counter() - start},
        checkpoint=str(Path(cfg.ckpt_path).resolve()),
    )


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return objective(cfg, run_and_report(cfg, evaluate))


if __name__ == "__main__":
    main()
