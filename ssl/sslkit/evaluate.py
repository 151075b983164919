"""``sslkit-eval``: evaluate a pretraining checkpoint, or a bare backbone, with the named protocols.

sslkit-eval ckpt_path=outputs/pretrain/<run>/checkpoints/last.ckpt eval=[knn]
sslkit-eval backbone=resnet18 data=fashion_mnist eval.weights=random
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from sslkit.config import config_dir, exit_on_unknown_keys, register_configs
from sslkit.loggers import log_config
from sslkit.methods.base import SSLMethod
from sslkit.models.backbones import Backbone, describe, load_torchvision_weights
from sslkit.pipeline import (
    baseline_encoder,
    build_datamodule,
    build_method,
    check_classes,
    evaluate_and_report,
    feature_cache_for,
    resolve_device,
)
from sslkit.resume import DamagedCheckpointError, read_checkpoint
from sslkit.train import objective, run_and_report

log = logging.getLogger(__name__)
register_configs()


class FrozenBackbone(SSLMethod):
    """A backbone evaluated as it is (random or torchvision weights), without a method."""

    def __init__(self, backbone: Backbone) -> None:
        # Never trained: no optimiser and no online probe.
        super().__init__(backbone, optimizer=None, online_probe=False)


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint written by ``sslkit-train``, refusing files it did not write."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"checkpoint {file} does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt"
        )
    try:
        checkpoint = read_checkpoint(file)
    except DamagedCheckpointError as exc:
        raise DamagedCheckpointError(
            f"{exc}. Pass an intact one, e.g. a checkpoints/epochNNN.ckpt of the same run."
        ) from None
    if "sslkit_config" not in checkpoint:
        raise ValueError(f"{file} holds no sslkit run config; was it written by sslkit-train?")
    return checkpoint


def run_config(cfg: DictConfig, checkpoint: dict[str, Any]) -> DictConfig:
    """The training run's config, with this evaluation's data, backbone, eval, seed, baselines."""
    merged = OmegaConf.create(checkpoint["sslkit_config"])
    with open_dict(merged):
        for key in ("data", "backbone"):
            if cfg.get(key) is not None:
                merged[key] = cfg[key]
        merged.eval = cfg.eval
        merged.seed = cfg.seed
        merged.baselines = cfg.baselines
    return merged


def stored_history(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The per-epoch metric curves a training run kept in its checkpoint, if any."""
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("MetricHistory"):
            return state["history"]
    return None


def check_backbone(method: SSLMethod, checkpoint: dict[str, Any], path: str) -> None:
    """Refuse a checkpoint whose backbone architecture differs from the configured one."""
    expected = checkpoint.get("sslkit_backbone")
    configured = describe(method.backbone)
    if expected is not None and configured != expected:
        raise ValueError(
            f"the checkpoint {path} holds a {_architecture(expected)} but the configured "
            f"backbone is a {_architecture(configured)}; drop the backbone= (and data=) "
            "override to use the checkpoint's own, or pass the architecture it was trained with"
        )


def _architecture(description: dict[str, Any]) -> str:
    return (
        f"{description['class']} ({description['feature_dim']}-d features, output stride "
        f"{description['output_stride']}, {description['num_parameters']:,} parameters)"
    )


def restore_method(
    cfg: DictConfig, checkpoint: dict[str, Any], path: str | Path
) -> tuple[SSLMethod, Any]:
    """The datamodule and method of ``cfg``, with the checkpoint's trained weights."""
    datamodule = build_datamodule(cfg)
    method = build_method(cfg, datamodule)
    check_backbone(method, checkpoint, str(path))
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
    method, datamodule = restore_method(config, checkpoint, ckpt_path)
    return LoadedRun(method.eval(), datamodule, config)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` (or ``cfg.backbone`` with ``eval.weights``) into
    ``results.json`` in this run's directory."""
    start = time.perf_counter()
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    device = resolve_device(cfg.eval.device)
    if cfg.get("ckpt_path") is None:
        check_bare_backbone_config(cfg)
        run_cfg, checkpoint, history, cache_file = cfg, None, None, None
        datamodule = build_datamodule(cfg)
        method = bare_backbone(cfg, datamodule)
    else:
        if cfg.eval.weights is not None:
            raise ValueError(
                "eval.weights applies to backbone=<name> without a checkpoint; a checkpoint "
                "brings its own weights (drop eval.weights or ckpt_path)"
            )
        checkpoint_data = load_checkpoint(cfg.ckpt_path)
        run_cfg = run_config(cfg, checkpoint_data)
        method, datamodule = restore_method(run_cfg, checkpoint_data, cfg.ckpt_path)
        checkpoint = str(Path(cfg.ckpt_path).resolve())
        history = stored_history(checkpoint_data)
        cache_file = feature_cache_for(run_cfg, cfg.ckpt_path, device)
    check_classes(datamodule)
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    log_config(logger, run_cfg)
    return evaluate_and_report(
        run_cfg,
        method=method,
        datamodule=datamodule,
        output_dir=output_dir,
        device=device,
        logger=logger,
        timings={"load_s": time.perf_counter() - start},
        checkpoint=checkpoint,
        history=history,
        cache_file=cache_file,
    )


def check_bare_backbone_config(cfg: DictConfig) -> None:
    """Without a checkpoint, a backbone, a dataset and weights must be named."""
    missing = [
        option
        for option, value in (
            ("backbone=<name>", cfg.get("backbone")),
            ("data=<name>", cfg.get("data")),
            ("eval.weights=random (or torchvision weights)", cfg.eval.weights),
        )
        if value is None
    ]
    if missing:
        raise ValueError(
            "nothing to evaluate: pass ckpt_path=<run dir>/checkpoints/last.ckpt, or evaluate a "
            f"backbone without pretraining by also setting {', '.join(missing)}"
        )


def bare_backbone(cfg: DictConfig, datamodule: Any) -> FrozenBackbone:
    """``cfg.backbone`` with ``eval.weights``: its seeded random init, or torchvision weights."""
    backbone = baseline_encoder("random_init", cfg, datamodule)
    if cfg.eval.weights != "random":
        load_torchvision_weights(backbone, cfg.eval.weights)
    return FrozenBackbone(backbone)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def hydra_main(cfg: DictConfig) -> float | None:
    return objective(cfg, run_and_report(cfg, evaluate))


def main() -> None:
    """``sslkit-eval``: a misspelt key stops with a suggestion before Hydra runs anything."""
    exit_on_unknown_keys("eval", sys.argv[1:])
    hydra_main()


if __name__ == "__main__":
    main()
