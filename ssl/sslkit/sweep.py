"""Multirun sweeps: a failed job is recorded in its own folder and the sweep goes on.

Hydra's local launcher stops a sweep at the first exception. Inside a multirun, sslkit's entry
points instead log the error, write ``failed.json`` into the job's folder and return no
objective, so the other jobs still run; ``sslkit-report`` and the summary at the end of the
sweep list the failures.
"""

from __future__ import annotations

import logging
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sslkit.files import write_json_atomic

log = logging.getLogger(__name__)

FAILED_FILE = "failed.json"


def is_multirun() -> bool:
    """Whether the current Hydra job is one job of a multirun (``-m`` or ``hydra.mode``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _container(cfg: DictConfig) -> Any:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # the failure may be an interpolation that cannot resolve
        return OmegaConf.to_container(cfg, resolve=False)


def record_failure(exc: BaseException, cfg: DictConfig, output_dir: Path) -> Path:
    """Write ``failed.json`` (error, traceback, overrides, config) into the job's folder."""
    hydra = HydraConfig.get()
    return write_json_atomic(
        output_dir / FAILED_FILE,
        {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)),
            "overrides": list(hydra.overrides.task),
            "job": hydra.job.num,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": _container(cfg),
        },
    )


class ReportFailedJobs(Callback):
    """At the end of a multirun, log which jobs failed and where their ``failed.json`` is."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = sorted(sweep_dir.rglob(FAILED_FILE))
        if not failed:
            log.info("all jobs of %s finished", sweep_dir)
            return
        log.error(
            "%d job(s) of %s failed (the others ran): %s. `sslkit-report %s` lists them.",
            len(failed),
            sweep_dir,
            ", ".join(str(path.parent) for path in failed),
            sweep_dir,
        )
