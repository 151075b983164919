"""Failed jobs are recorded in their own folder; in a multirun the sweep goes on.

Every failed job writes ``failed.json`` into its folder. Hydra's local launcher stops a sweep at
the first exception; inside a multirun, sslkit's entry points instead log the error and return
no objective, so the other jobs still run; ``sslkit-report`` and the summary at the end of the
sweep list the failures, and a sweep whose every job failed exits with status 1.
"""

from __future__ import annotations

import json
import logging
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sslkit.run.files import write_json_atomic
from sslkit.run.results import RESULTS_FILE

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


def user_message(exc: BaseException) -> str:
    """The one-line message of a user error; an error re-raised from a DataLoader worker process
    ("Caught X in DataLoader worker process N" and the worker's traceback) is reduced to the
    worker's own message."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        name, _, message = last.partition(": ")
        text = message if name.rsplit(".", 1)[-1] == type(exc).__name__ else last
    return text


def record_failure(exc: BaseException, cfg: DictConfig, output_dir: Path) -> Path:
    """Write ``failed.json`` (error, traceback, overrides, config) into the job's folder."""
    hydra = HydraConfig.get()
    return write_json_atomic(
        output_dir / FAILED_FILE,
        {
            "error": f"{type(exc).__name__}: {user_message(exc)}",
            "traceback": "".join(traceback.format_exception(exc)),
            "overrides": list(hydra.overrides.task),
            "job": OmegaConf.select(hydra, "job.num", default=None),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": _container(cfg),
        },
    )


class ReportFailedJobs(Callback):
    """At the end of a multirun, log which jobs failed and where their ``failed.json`` is; when
    every job failed, the sweep command exits with status 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = sorted(sweep_dir.rglob(FAILED_FILE))
        if not failed:
            log.info("all jobs of %s finished", sweep_dir)
            return
        jobs = ", ".join(str(path.parent) for path in failed)
        if not any(sweep_dir.rglob(RESULTS_FILE)):
            log.error("every job of %s failed: %s", sweep_dir, jobs)
            raise SystemExit(
                f"error: all {len(failed)} job(s) of the sweep failed; the first error: "
                f"{json.loads(failed[0].read_text(encoding='utf-8'))['error']} (every job's error "
                f"is in its failed.json; `sslkit-report {sweep_dir}` lists them)"
            )
        log.error(
            "%d job(s) of %s failed (the others ran): %s. `sslkit-report %s` lists them.",
            len(failed),
            sweep_dir,
            jobs,
            sweep_dir,
        )
