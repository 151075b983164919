"""Resume a run only from a checkpoint that the same config wrote.

A job resumes from ``<run dir>/checkpoints/last.ckpt`` (a requeued SLURM job, a re-launched
sweep) only when the hash of its resolved config equals the hash stored in that checkpoint, so
two sweep points can never continue each other's training. Any other checkpoint folder is moved
aside, never deleted, and the run starts fresh. A resumed run continues exactly: checkpoints also
hold the global random states (:class:`RandomState`), are written atomically
(:class:`AtomicCheckpointIO`), optionally every few steps (:class:`StepCheckpoint`), and a damaged
``last.ckpt`` gives way to the newest intact per-epoch checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, Checkpoint
from pytorch_lightning.utilities import rank_zero_only

from sslkit.run.files import atomic_write, set_aside

log = logging.getLogger(__name__)

#: Top-level config keys left out of the hash: they do not change the trained weights. The
#: switch itself, where and how curves are logged, machine-local cluster settings, and what
#: happens after training (so a finished run can be re-evaluated with other protocols without
#: retraining). Everything else must match, including ``trainer.max_epochs``: its learning-rate
#: schedule depends on it, so a longer run starts over instead of continuing a shorter one.
RESUME_IGNORED_KEYS = ("resume", "logger", "local", "eval", "baselines", "objective")

CONFIG_HASH_KEY = "sslkit_config_hash"
RANDOM_STATE_KEY = "sslkit_random_state"


def config_hash(config: DictConfig | Mapping[str, Any]) -> str:
    """Hash of the resolved config without :data:`RESUME_IGNORED_KEYS` (16 hex digits)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    kept = {key: value for key, value in config.items() if key not in RESUME_IGNORED_KEYS}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class DamagedCheckpointError(ValueError):
    """A checkpoint file that cannot be loaded: cut short by a crash, or not a checkpoint."""


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` of a checkpoint on the CPU; :class:`DamagedCheckpointError` (naming the file
    and the first line of the reason) when it cannot be read or holds no dict."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise DamagedCheckpointError(
            f"{path} cannot be read as a checkpoint ({type(exc).__name__}: {reason}): it was cut "
            "short (a run killed while writing it, a copy that did not finish) or is not a "
            "checkpoint"
        ) from None
    if not isinstance(checkpoint, dict):
        raise DamagedCheckpointError(
            f"{path} holds a {type(checkpoint).__name__}, not a checkpoint"
        )
    return checkpoint


def stored_hash(path: Path) -> str | None:
    """The config hash a checkpoint was written with (None when it holds none); raises
    :class:`DamagedCheckpointError` when the file cannot be read."""
    return read_checkpoint(path, mmap=True).get(CONFIG_HASH_KEY)


def _epoch_checkpoints(directory: Path) -> list[Path]:
    """The per-epoch checkpoints of a folder, newest epoch first."""
    return sorted(directory.glob("epoch*.ckpt"), key=lambda p: p.name, reverse=True)


def _intact_fallback(directory: Path, expected_hash: str) -> Path | None:
    """The newest per-epoch checkpoint of this config that can be read."""
    for candidate in _epoch_checkpoints(directory):
        try:
            if stored_hash(candidate) == expected_hash:
                return candidate
        except DamagedCheckpointError as exc:
            log.warning("%s", exc)
    return None


def resume_checkpoint(
    directory: Path, expected_hash: str, *, resume: bool = True, companions: Sequence[Path] = ()
) -> str | None:
    """The checkpoint to resume from: ``directory/last.ckpt`` when ``resume`` and its config hash
    matches, else None.

    A ``last.ckpt`` that cannot be read is renamed ``last.damaged.ckpt`` and the newest intact
    ``epochNNN.ckpt`` of the same config is resumed instead, with a warning. A folder that is not
    resumed (other config, or ``resume=false``) is renamed to ``<directory>.<its hash>`` by the
    rank-zero process so the fresh run cannot overwrite it; ``companions`` (e.g. the CSV log
    folder of that run) are set aside with the same tag, so a resumed run continues its curves
    and a fresh run starts new ones.
    """
    last = directory / "last.ckpt"
    if not last.is_file():
        return None
    try:
        found = stored_hash(last)
    except DamagedCheckpointError as exc:
        fallback = _intact_fallback(directory, expected_hash) if resume else None
        if fallback is not None:
            if rank_zero_only.rank == 0:
                kept = set_aside(last, "damaged")
                log.warning(
                    "%s; resuming from the newest intact checkpoint %s instead (the damaged file "
                    "is kept as %s)",
                    exc,
                    fallback,
                    kept.name,
                )
            return str(fallback)
        log.warning("%s and no intact checkpoint of this config is beside it", exc)
        found = "damaged"
    if resume and found == expected_hash:
        log.info("resuming from %s (config hash %s)", last, expected_hash)
        return str(last)
    if rank_zero_only.rank == 0:
        kept = set_aside(directory, found or "unknown")
        for companion in companions:
            if companion.exists():
                set_aside(companion, found or "unknown")
        if not resume:
            reason = "resume=false"
        elif found == "damaged":
            reason = "it cannot be read"
        else:
            reason = f"it was written by another config (hash {found}, this run {expected_hash})"
        log.warning(
            "not resuming from %s: %s; starting fresh, the old checkpoints are kept in %s",
            last,
            reason,
            kept,
        )
    return None


def random_states() -> dict[str, Any]:
    """The global random states of torch (CPU and CUDA), numpy and Python's ``random``."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        # Plain types and tensors: Lightning loads checkpoints with weights_only=True.
        "numpy": (
            name,
            torch.from_numpy(keys.astype(np.int64)),
            position,
            has_gauss,
            cached_gaussian,
        ),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: Mapping[str, Any]) -> None:
    """Restore what :func:`random_states` returned."""
    torch.set_rng_state(states["torch"])
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state(
        (name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian)
    )
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RandomState(Callback):
    """Keep the global random states in every checkpoint and restore them when a run resumes.

    With the training order fixed by :class:`sslkit.data.sampling.EpochSampler`, this makes a
    run resumed from any checkpoint (also one written mid-epoch) draw the same augmentations
    and mining choices as the run that was never interrupted. The states are restored when
    training starts, after the loaders are set up, right before the first resumed batch.
    """

    def __init__(self) -> None:
        self._restore: Mapping[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[RANDOM_STATE_KEY] = random_states()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self._restore = checkpoint.get(RANDOM_STATE_KEY)

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self._restore is not None:
            set_random_states(self._restore)
            self._restore = None


class StepCheckpoint(Checkpoint):
    """Write ``path`` (the run's ``last.ckpt``) every ``every_n_steps`` optimiser steps, so an
    interrupted epoch resumes where it stopped instead of from its beginning."""

    def __init__(self, path: Path, every_n_steps: int) -> None:
        if every_n_steps < 1:
            raise ValueError(f"checkpoint_every_n_steps must be >= 1, got {every_n_steps}")
        self.path = path
        self.every_n_steps = every_n_steps

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed, so a crash never leaves half of one."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(path, lambda handle: torch.save(checkpoint, handle))
