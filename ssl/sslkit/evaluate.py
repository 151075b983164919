"""``sslkit-eval``: evaluate a pretraining checkpoint, or a bare backbone, with the named protocols.

sslkit-eval ckpt_path=outputs/pretrain/<run>/checkpoints/last.ckpt eval=[knn]
sslkit-eval backbone=resnet18 data=fashion_mnist eval.weights=random
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sslkit.build import (
    build_bare_backbone,
    build_datamodule,
    build_logger,
    load_checkpoint,
    resolve_device,
    restore_method,
    run_config,
    stored_history,
)
from sslkit.config import config_dir, exit_on_unknown_keys, register_configs
from sslkit.evaluation import check_classes, evaluate_and_report, feature_cache_for
from sslkit.run.jobs import objective, run_and_report
from sslkit.run.loggers import log_config

register_configs()

#: What ``results.json`` calls a backbone evaluated as it is, without a method.
BARE_BACKBONE = "FrozenBackbone"


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
        model, name = build_bare_backbone(cfg, datamodule), BARE_BACKBONE
    else:
        if cfg.eval.weights is not None:
            raise ValueError(
                "eval.weights applies to backbone=<name> without a checkpoint; a checkpoint "
                "brings its own weights (drop eval.weights or ckpt_path)"
            )
        checkpoint_data = load_checkpoint(cfg.ckpt_path)
        run_cfg = run_config(cfg, checkpoint_data)
        model, datamodule = restore_method(run_cfg, checkpoint_data, cfg.ckpt_path)
        name = type(model).__name__
        checkpoint = str(Path(cfg.ckpt_path).resolve())
        history = stored_history(checkpoint_data)
        cache_file = feature_cache_for(run_cfg, cfg.ckpt_path, device)
    check_classes(datamodule)
    logger = build_logger(cfg)
    log_config(logger, run_cfg)
    return evaluate_and_report(
        run_cfg,
        model=model,
        name=name,
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


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def hydra_main(cfg: DictConfig) -> float | None:
    return objective(cfg, run_and_report(cfg, evaluate))


def main() -> None:
    """``sslkit-eval``: a misspelt key stops with a suggestion before Hydra runs anything."""
    exit_on_unknown_keys("eval", sys.argv[1:])
    hydra_main()


if __name__ == "__main__":
    main()
