"""One Hydra job of either entry point: its outcome, its failure and its objective.

A job first sets aside the ``results.json`` an earlier job left in its folder, so the folder
only holds one when its latest job finished; errors a user can cause end with one message, and
inside a multirun no error stops the sweep (see :mod:`sslkit.run.failures`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from sslkit.methods.base import NonFiniteLossError
from sslkit.run.failures import FAILED_FILE, is_multirun, record_failure, user_message
from sslkit.run.files import set_aside
from sslkit.run.loggers import finish_wandb
from sslkit.run.results import RESULTS_FILE, read_document
from sslkit.run.resume import config_hash

log = logging.getLogger(__name__)


def set_aside_results(output_dir: Path) -> Path | None:
    """Rename a ``results.json`` left by an earlier job in this folder to
    ``results.<config hash>.json`` (the tag its checkpoints are kept under), so the folder only
    holds a ``results.json`` when its latest job finished."""
    results = output_dir / RESULTS_FILE
    if not results.is_file():
        return None
    try:
        tag = config_hash(read_document(results)["config"])
    except (OSError, ValueError):
        tag = "unreadable"
    kept = set_aside(results, tag)
    log.info("the results of an earlier job in %s are kept as %s", output_dir, kept.name)
    return kept


def run_and_report(cfg: DictConfig, job: Callable[[DictConfig], Any]) -> Any:
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


def objective_metric(cfg: DictConfig, results: dict[str, Any] | None = None) -> str | None:
    """The metric name sweepers optimise: ``cfg.objective``, or when that is None the kNN top-1
    (mAP on multi-label data) at the first ``eval.knn.k``, else the linear probe's; None when
    neither protocol runs."""
    if cfg.get("objective") is not None:
        return cfg.objective
    protocol = (results or {}).get("protocol", {})
    score = "mAP" if protocol.get("multilabel") else "top1"
    knn = cfg.get("eval", {}).get("knn")
    if knn is not None:
        return f"knn/{score}@{instantiate(knn).k[0]}"
    if cfg.get("eval", {}).get("linear") is not None:
        return f"linear/{score}"
    return None


def objective(cfg: DictConfig, results: dict[str, Any] | None) -> float | None:
    """The metric :func:`objective_metric` that sweepers (Optuna) optimise; None for a failed
    job."""
    if not results:
        return None
    metrics = results.get("metrics", {})
    name = objective_metric(cfg, results)
    value = metrics.get(name) if name is not None else None
    if value is None and is_multirun():
        log.warning(
            "objective=%s is not among the metrics (%s); the sweeper gets no value",
            name,
            ", ".join(sorted(metrics)),
        )
    return value
