"""``sslkit-train``: compose the config, pretrain, evaluate, write ``results.json``.

sslkit-train experiment=simclr_resnet18_fashion_mnist trainer.max_epochs=20
python -m sslkit.train -m method.temperature=0.1,0.2 seed=0,1
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint

from sslkit.config import config_dir, exit_on_unknown_keys, register_configs
from sslkit.files import RESULTS_FILE, set_aside
from sslkit.loggers import finish_wandb, log_config
from sslkit.methods.base import NonFiniteLossError
from sslkit.pipeline import (
    build_datamodule,
    build_method,
    build_monitor_callbacks,
    check_classes,
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
from sslkit.sweep import FAILED_FILE, is_multirun, record_failure, user_message

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


def check_trainer(trainer: DictConfig) -> None:
    """Refuse trainer settings that cannot run here or would train nothing."""
    if trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={trainer.accelerator} (from trainer=gpu or trainer=ddp, or the "
            "preset) but this machine has no CUDA GPU; add trainer=cpu to run on the CPU, or run "
            "it on a GPU machine."
        )
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        if trainer.get(key) == 0:
            raise ValueError(
                f"trainer.{key}=0 trains nothing, so the results would describe the untrained "
                f"encoder under the method's name. Set trainer.{key} to at least 1; to evaluate "
                "an untrained backbone use the random_init baseline (in every results.json) or "
                "sslkit-eval backbone=<name> data=<name> eval.weights=random."
            )


def check_finite_weights(method: pl.LightningModule) -> None:
    """Stop when training left NaN/inf weights or statistics, which a finite loss can hide (e.g.
    BatchNorm variances overflowing in the last steps)."""
    bad = [
        name
        for name, value in method.state_dict().items()
        if value.is_floating_point() and not torch.isfinite(value).all()
    ]
    if bad:
        raise NonFiniteLossError(
            f"training ended with non-finite values in {len(bad)} weight tensor(s), e.g. "
            f"{bad[0]}: the model diverged. Lower the learning rate (optim.lr) or add warmup "
            "(schedule.warmup_epochs); the checkpoints are kept for inspection."
        )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment end to end and return the ``results.json`` document."""
    start = time.perf_counter()
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    check_trainer(cfg.trainer)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    check_classes(datamodule)
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
    check_finite_weights(method)
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


def set_aside_results(output_dir: Path) -> Path | None:
    """Rename a ``results.json`` left by an earlier job in this folder to
    ``results.<config hash>.json`` (the tag its checkpoints are kept under), so the folder only
    holds a ``results.json`` when its latest job finished."""
    results = output_dir / RESULTS_FILE
    if not results.is_file():
        return None
    try:
        tag = config_hash(json.loads(results.read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        tag = "unreadable"
    kept = set_aside(results, tag)
    log.info("the results of an earlier job in %s are kept as %s", output_dir, kept.name)
    return kept


def run_and_report(cfg: DictConfig, job) -> Any:
    """Run ``job(cfg)``; errors a user can cause end with one message and exit status 1.

    A failed job writes ``failed.json`` (error, traceback, overrides, config) into its folder;
    a ``results.json`` of an earlier job there is set aside first. Inside a multirun no error
    stops the sweep: it is logged and the job returns None. The job's W&B run is closed either
    way.
    """
    user_errors = (FileNotFoundError, NonFiniteLossError, ValueError)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    (output_dir / FAILED_FILE).unlink(missing_ok=True)
    set_aside_results(output_dir)
    exit_code = 1
    try:
        result = job(cfg)
        exit_code = 0
        return result
    except Exception as exc:
        user_error = isinstance(exc, user_errors)
        recorded = record_failure(exc, cfg, output_dir)
        if is_multirun():
            if user_error:
                log.error("job failed: %s", user_message(exc))
            else:
                log.exception("job failed")
            log.error("recorded in %s; the sweep goes on", recorded)
            return None
        if not user_error or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = user_message(exc)
        log.error("%s", message)
        raise SystemExit(f"error: {message}") from None
    finally:
        finish_wandb(exit_code)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    return objective(cfg, run_and_report(cfg, train))


def main() -> None:
    """``sslkit-train``: a misspelt key stops with a suggestion before Hydra runs anything."""
    exit_on_unknown_keys("train", sys.argv[1:])
    hydra_main()


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
