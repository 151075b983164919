"""Experiment loggers: W&B that never blocks a run, and final metrics into logger summaries."""

from __future__ import annotations

import csv
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

log = logging.getLogger(__name__)

_WANDB_HOST = "api.wandb.ai"


def _wandb_reachable(timeout: float = 2.0) -> bool:
    """Whether W&B's API answers on port 443 within ``timeout`` seconds."""
    host = os.environ.get("WANDB_BASE_URL", f"https://{_WANDB_HOST}").split("://")[-1]
    host = host.split("/")[0].split(":")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser(os.environ.get("NETRC", "~/.netrc"))
    try:
        with open(netrc, encoding="utf-8") as handle:
            return _WANDB_HOST in handle.read()
    except OSError:
        return False


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued.

    Lightning deletes the file when a run restarts in the same directory, which would throw
    away the curves of a resumed run's first part; this writer keeps its rows and header.
    """

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = list(csv.DictReader(handle).fieldnames or [])


class ResumableCSVLogger(CSVLogger):
    """CSV metrics under ``<save_dir>/<name>/metrics.csv`` that survive resuming a run."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` -> ``online`` with credentials and network, else ``offline``; others unchanged."""
    if mode not in {"auto", "online", "offline", "disabled"}:
        raise ValueError(f"logger.mode must be auto, online, offline or disabled, got {mode!r}")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in {"online", "offline", "disabled"}:
        return os.environ["WANDB_MODE"]
    if _has_wandb_credentials() and _wandb_reachable():
        return "online"
    log.info("W&B: no API key or no network, logging offline (sync later with `wandb sync`)")
    return "offline"


#: W&B job type of each entry point (Hydra's job name is the entry module's name).
JOB_TYPES = {"train": "pretrain", "evaluate": "eval"}


def wandb_run_names(
    group: str | None, job_type: str | None, name: str | None
) -> tuple[str | None, str, str | None]:
    """Fill in group, job type and run name from the Hydra job where they are not given.

    In a multirun the sweep folder's name is appended to the group (two sweeps of one
    experiment are two groups) and each run is named by its overrides (``seed=1,...``).
    """
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    if job_type is None:
        job_type = JOB_TYPES.get(hydra.job.name, hydra.job.name) if hydra else "pretrain"
    if hydra is not None and hydra.mode == RunMode.MULTIRUN:
        sweep = Path(hydra.sweep.dir).name
        group = f"{group}/{sweep}" if group else sweep
        name = name or hydra.job.override_dirname or None
    return group, job_type, name


def wandb_logger(
    *,
    project: str,
    save_dir: str,
    entity: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: Sequence[str] = (),
    mode: str = "auto",
    name: str | None = None,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` whose mode is settled before the first network call.

    Offline runs keep everything under ``<save_dir>/wandb/offline-run-*``; upload them later
    with ``wandb sync``. The init timeout is short so an unreachable server cannot stall a job.
    Group, job type and name default to the Hydra job's (see :func:`wandb_run_names`).
    """
    import wandb

    resolved = resolve_wandb_mode(mode)
    group, job_type, name = wandb_run_names(group, job_type, name)
    return WandbLogger(
        project=project,
        entity=entity,
        group=group,
        job_type=job_type,
        tags=list(tags),
        name=name,
        save_dir=save_dir,
        mode=resolved,
        settings=wandb.Settings(init_timeout=60, silent=True),
    )


def log_summary(logger: Logger | None, metrics: Mapping[str, Any]) -> None:
    """Write final metrics to the logger: W&B run summary, or a last row for other loggers."""
    if logger is None:
        return
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    if isinstance(logger, WandbLogger):
        try:
            logger.experiment.summary.update(scalars)
        except Exception as exc:  # W&B trouble must never fail a finished run
            log.warning("could not write the W&B summary: %s", exc)
        return
    logger.log_metrics({f"final/{k}": v for k, v in scalars.items()})
    logger.save()


def log_config(logger: Logger | None, cfg: DictConfig) -> None:
    """Record the full resolved run config: the W&B run config, ``hparams.yaml`` for CSV."""
    if logger is None:
        return
    try:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    except Exception as exc:  # a logger problem must never fail a run
        log.warning("could not log the run config to %s: %s", type(logger).__name__, exc)


#: Image files that :func:`log_media` uploads (W&B's own folder below the run dir is skipped).
MEDIA_SUFFIXES = (".png", ".jpg", ".jpeg")


def log_media(logger: Logger | None, output_dir: Path) -> None:
    """Log the run's plots and images (``*.png`` etc. below the run dir) as W&B media.

    Each image is logged under ``media/<path relative to the run dir, without suffix>``.
    """
    if not isinstance(logger, WandbLogger):
        return
    for path in sorted(output_dir.rglob("*")):
        relative = path.relative_to(output_dir)
        if path.suffix.lower() not in MEDIA_SUFFIXES or relative.parts[0] == "wandb":
            continue
        try:
            logger.log_image(key=f"media/{relative.with_suffix('').as_posix()}", images=[str(path)])
        except Exception as exc:  # W&B trouble must never fail a finished run
            log.warning("could not log %s to W&B: %s", path, exc)


def finish_wandb(exit_code: int = 0) -> None:
    """Close the current W&B run, if any, so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    try:
        wandb.finish(exit_code=exit_code)
    except Exception as exc:  # W&B trouble must never fail a run
        log.warning("could not finish the W&B run: %s", exc)
