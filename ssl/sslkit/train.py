"""``sslkit-train``: compose the config, pretrain, evaluate, write ``results.json``.

sslkit-train experiment=simclr_resnet18_fashion_mnist trainer.max_epochs=20
python -m sslkit.train -m method.temperature=0.1,0.2 seed=0,1
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint

from sslkit.config import config_dir, register_configs
from sslkit.loggers import finish_wandb, log_config
from sslkit.pipeline import (
    build_datamodule,
    build_method,
    build_monitor_callbacks,
    evaluate_and_report,
    resolve_device,
)
from sslkit.resume import (
    CONFIG_HASH_KEY,
    AtomicCheckpointIO,
    RandomState,
    StepCheckpoint,
    config_hash,
    resume_checkpoint,
)
from sslkit.sweep import FAILED_FILE, is_multirun, record_failure

log = logging.getLogger(__name__)
register_configs()
# The training loader resumes mid-epoch through its EpochSampler, which Lightning cannot see.
warnings.filterwarnings(
    "ignore", message="You're resuming from a checkpoint that ended before the epoch ended"
)


class StoreConfig(Callback):
    """Keep the resolved run config (and its hash, for resuming) inside every checkpoint, so
    it can be evaluated alone."""

    def __init__(self, cfg: DictConfig) -> None:
        self.config = OmegaConf.to_container(cfg, resolve=True)
        self.hash = config_hash(self.config)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint["sslkit_config"] = self.config
        checkpoint[CONFIG_HASH_KEY] = self.hash


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment end to end and return the ``results.json`` document."""
    start = time.perf_counter()
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    method = build_method(cfg, datamodule)
    checkpoints = output_dir / "checkpoints"
    store_config = StoreConfig(cfg)
    resume_from = resume_checkpoint(
        checkpoints, store_config.hash, resume=cfg.resume, companions=[output_dir / "csv"]
    )
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    log_config(logger, cfg)
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            save_last=True,
            # last.ckpt is also written by StepCheckpoint: overwrite it, never add last-v1.
            enable_version_counter=False,
            # After every epoch-end callback, so the checkpoint holds the epoch's history.
            save_on_train_epoch_end=True,
        ),
        store_config,
        RandomState(),
    ]
    if cfg.checkpoint_every_n_steps:
        callbacks.append(StepCheckpoint(checkpoints / "last.ckpt", cfg.checkpoint_every_n_steps))
    monitors, history = build_monitor_callbacks(cfg)
    callbacks.extend(monitors)
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = instantiate(
        cfg.trainer,
        logger=logger or False,
        callbacks=callbacks,
        default_root_dir=str(output_dir),
        plugins=[AtomicCheckpointIO()],
    )
    last = checkpoints / "last.ckpt"
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
    """Run ``job(cfg)``; errors a user can cause end with one message and exit status 1.

    Inside a multirun no error stops the sweep: it is logged, written to the job's
    ``failed.json`` and the job returns None. The job's W&B run is closed either way.
    """
    from sslkit.methods.base import NonFiniteLossError

    user_errors = (FileNotFoundError, NonFiniteLossError, ValueError)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    (output_dir / FAILED_FILE).unlink(missing_ok=True)
    exit_code = 1
    try:
        result = job(cfg)
        exit_code = 0
        return result
    except Exception as exc:
        if is_multirun():
            if isinstance(exc, user_errors):
                log.error("job failed: %s", exc)
            else:
                log.exception("job failed")
            log.error("recorded in %s; the sweep goes on", record_failure(exc, cfg, output_dir))
            return None
        if not isinstance(exc, user_errors) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", exc)
        raise SystemExit(f"error: {exc}") from None
    finally:
        finish_wandb(exit_code)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return objective(cfg, run_and_report(cfg, train))


def objective(cfg: DictConfig, results: dict[str, Any] | None) -> float | None:
    """The metric ``cfg.objective`` that sweepers (Optuna) optimise; None for a failed job."""
    if not results:
        return None
    value = results.get("metrics", {}).get(cfg.objective)
    if value is None and is_multirun():
        log.warning(
            "objective=%s is not among the metrics (%s); the sweeper gets no value",
            cfg.objective,
            ", ".join(sorted(results.get("metrics", {}))),
        )
    return value


if __name__ == "__main__":
    main()
