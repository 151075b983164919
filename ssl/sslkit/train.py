"""``sslkit-train``: compose the config, pretrain, evaluate, write ``results.json``.

sslkit-train experiment=simclr_resnet18_fashion_mnist trainer.max_epochs=20
python -m sslkit.train -m method.temperature=0.1,0.2 seed=0,1
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint

from sslkit.config import config_dir, register_configs
from sslkit.pipeline import (
    build_datamodule,
    build_method,
    build_monitor_callbacks,
    evaluate_and_report,
    resolve_device,
)

log = logging.getLogger(__name__)
register_configs()


class StoreConfig(Callback):
    """Keep the resolved run config inside every checkpoint, so it can be evaluated alone."""

    def __init__(self, cfg: DictConfig) -> None:
        self.config = OmegaConf.to_container(cfg, resolve=True)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint["sslkit_config"] = self.config


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment end to end and return the ``results.json`` document."""
    start = time.perf_counter()
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    method = build_method(cfg, datamodule)
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    checkpoints = output_dir / "checkpoints"
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            save_last=True,
            # After every epoch-end callback, so the checkpoint holds the epoch's history.
            save_on_train_epoch_end=True,
        ),
        StoreConfig(cfg),
    ]
    monitors, history = build_monitor_callbacks(cfg)
    callbacks.extend(monitors)
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = instantiate(
        cfg.trainer, logger=logger or False, callbacks=callbacks, default_root_dir=str(output_dir)
    )
    last = checkpoints / "last.ckpt"
    resume_from = str(last) if cfg.resume and last.is_file() else None
    if resume_from:
        log.info("resuming from %s", resume_from)
    trainer.fit(method, datamodule=datamodule, ckpt_path=resume_from)
    pretrain_s = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}

    device = resolve_device(cfg.eval.device, trainer.strategy.root_device)
    results = evaluate_and_report(
        cfg,
        method=method,
        datamodule=datamodule,
        output_dir=output_dir,
        device=device,
        logger=logger,
        timings={"pretrain_s": pretrain_s},
        checkpoint=str(last) if last.is_file() else None,
        history=history.history,
    )
    return results


def run_and_report(cfg: DictConfig, job) -> Any:
    """Run ``job(cfg)``; errors a user can cause end with one message and exit status 1."""
    from sslkit.methods.base import NonFiniteLossError

    try:
        return job(cfg)
    except (FileNotFoundError, NonFiniteLossError, ValueError) as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", exc)
        raise SystemExit(f"error: {exc}") from None


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    results = run_and_report(cfg, train)
    return results.get("metrics", {}).get(cfg.objective) if results else None


if __name__ == "__main__":
    main()
