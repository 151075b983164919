"""Resume a run only from a checkpoint that the same config wrote.

A job resumes from ``<run dir>/checkpoints/last.ckpt`` (a requeued SLURM job, a re-launched
sweep) only when the hash of its resolved config equals the hash stored in that checkpoint, so
two sweep points can never continue each other's training. Any other checkpoint folder is moved
aside, never deleted, and the run starts fresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)

#: Top-level config keys left out of the hash: they do not change the trained weights. The
#: switch itself, where and how curves are logged, machine-local cluster settings, and what
#: happens after training (so a finished run can be re-evaluated with other protocols without
#: retraining). Everything else must match, including ``trainer.max_epochs``: its learning-rate
#: schedule depends on it, so a longer run starts over instead of continuing a shorter one.
RESUME_IGNORED_KEYS = ("resume", "logger", "local", "eval", "baselines", "objective")

CONFIG_HASH_KEY = "sslkit_config_hash"


def config_hash(config: DictConfig | Mapping[str, Any]) -> str:
    """Hash of the resolved config without :data:`RESUME_IGNORED_KEYS` (16 hex digits)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    kept = {key: value for key, value in config.items() if key not in RESUME_IGNORED_KEYS}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stored_hash(path: Path) -> str | None:
    """The config hash a checkpoint was written with; None when absent or unreadable."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as exc:  # a half-written file from a killed job is not resumable
        log.warning("cannot read %s (%s)", path, exc)
        return None
    return checkpoint.get(CONFIG_HASH_KEY) if isinstance(checkpoint, dict) else None


def _set_aside(directory: Path, tag: str) -> Path:
    target = directory.with_name(f"{directory.name}.{tag}")
    counter = 1
    while target.exists():
        target = directory.with_name(f"{directory.name}.{tag}.{counter}")
        counter += 1
    directory.rename(target)
    return target


def resume_checkpoint(
    directory: Path, expected_hash: str, *, resume: bool = True, companions: Sequence[Path] = ()
) -> str | None:
    """``directory/last.ckpt`` when ``resume`` and its config hash matches, else None.

    A folder that is not resumed (other config, unreadable, or ``resume=false``) is renamed to
    ``<directory>.<its hash>`` by the rank-zero process so the fresh run cannot overwrite it;
    ``companions`` (e.g. the CSV log folder of that run) are set aside with the same tag, so a
    resumed run continues its curves and a fresh run starts new ones.
    """
    last = directory / "last.ckpt"
    if not last.is_file():
        return None
    found = stored_hash(last)
    if resume and found == expected_hash:
        log.info("resuming from %s (config hash %s)", last, expected_hash)
        return str(last)
    if rank_zero_only.rank == 0:
        kept = _set_aside(directory, found or "unknown")
        for companion in companions:
            if companion.exists():
                _set_aside(companion, found or "unknown")
        reason = (
            "resume=false"
            if not resume
            else f"it was written by another config (hash {found}, this run {expected_hash})"
        )
        log.warning(
            "not resuming from %s: %s; starting fresh, the old checkpoints are kept in %s",
            last,
            reason,
            kept,
        )
    return None
