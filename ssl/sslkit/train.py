"""``sslkit-train``: compose the config, pretrain, evaluate, write ``results.json``.

sslkit-train experiment=simclr_resnet18_fashion_mnist trainer.max_epochs=20
python -m sslkit.train -m method.temperature=0.1,0.2 seed=0,1
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sslkit.build import (
    StoreConfig,
    build_datamodule,
    build_logger,
    build_method,
    build_trainer,
    check_trainer,
    resolve_device,
)
from sslkit.config import config_dir, exit_on_unknown_keys, register_configs
from sslkit.evaluation import check_classes, evaluate_and_report
from sslkit.methods.base import NonFiniteLossError
from sslkit.run.host import keep_freed_memory
from sslkit.run.jobs import objective, run_and_report
from sslkit.run.loggers import log_config
from sslkit.run.resume import resume_checkpoint

register_configs()
# The training loader resumes mid-epoch through its EpochSampler, which Lightning cannot see.
warnings.filterwarnings(
    "ignore", message="You're resuming from a checkpoint that ended before the epoch ended"
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
    keep_freed_memory()
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
    logger = build_logger(cfg)
    log_config(logger, cfg)
    trainer, history = build_trainer(cfg, output_dir, logger=logger, store_config=store_config)
    trainer.fit(method, datamodule=datamodule, ckpt_path=resume_from)
    check_finite_weights(method)
    pretrain_s = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    last = checkpoints / "last.ckpt"
    return evaluate_and_report(
        cfg,
        model=method,
        name=type(method).__name__,
        datamodule=datamodule,
        output_dir=output_dir,
        device=resolve_device(cfg.eval.device, trainer.strategy.root_device),
        logger=logger,
        timings={"pretrain_s": pretrain_s},
        checkpoint=str(last) if last.is_file() else None,
        history=history.history,
    )


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    return objective(cfg, run_and_report(cfg, train))


def main() -> None:
    """``sslkit-train``: a misspelt key stops with a suggestion before Hydra runs anything."""
    exit_on_unknown_keys("train", sys.argv[1:])
    hydra_main()


if __name__ == "__main__":
    main()
