"""The training order: a seeded shuffle per epoch that a resumed run continues exactly.

A training epoch visits the images in an order fixed by ``(seed, epoch)`` alone, so it does
not depend on how many random numbers were drawn before, and a run resumed in the middle of an
epoch skips exactly the batches it already trained on. Any loader can use it: as the
``sampler`` of a ``DataLoader``, or inside a ``BatchSampler`` that yields whole batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from sslkit.distributed import rank, world_size


class EpochSampler(DistributedSampler):
    """Shuffled indices of ``dataset``, the permutation seeded by ``(seed, epoch)``.

    Under data-parallel training each process takes every ``world_size``-th index of the same
    permutation (it is a ``DistributedSampler``, so Lightning neither replaces nor wraps it);
    Lightning calls :meth:`set_epoch` at every epoch.

    Args:
        dataset: anything with a length; only its size is used.
        seed: the run's seed (default: ``torch.initial_seed()``, which ``seed_everything`` sets).
    """

    def __init__(self, dataset: Sized, seed: int | None = None) -> None:
        super().__init__(
            dataset,
            num_replicas=world_size(),
            rank=rank(),
            shuffle=True,
            seed=torch.initial_seed() if seed is None else seed,
        )
        self._resume_epoch, self._skip = 0, 0

    def resume_at(self, epoch: int, skip: int) -> None:
        """Start at ``epoch``, leaving out the first ``skip`` indices (of this process) of that
        epoch only: those a run interrupted mid-epoch had already consumed."""
        if not 0 <= skip <= self.num_samples:
            raise ValueError(f"skip must lie in [0, {self.num_samples}], got {skip}")
        self.set_epoch(epoch)
        self._resume_epoch, self._skip = epoch, skip

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())
        if self.epoch == self._resume_epoch and self._skip:
            indices, self._skip = indices[self._skip :], 0
        return iter(indices)

    def loader_generator(self) -> torch.Generator:
        """A generator for the ``DataLoader`` (it draws its worker seeds from it), so that
        starting an epoch does not consume the global random state a resumed run restores."""
        return torch.Generator().manual_seed(self.seed)


def training_position(trainer: Any) -> tuple[int, int]:
    """``(epoch, batches of it already trained)`` of a fit, as a checkpoint written now would
    continue it: a checkpoint at the end of an epoch continues at the start of the next one."""
    epoch = trainer.current_epoch
    done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
    if done >= trainer.num_training_batches:
        return epoch + 1, 0
    return epoch, done


class ResumableTrainOrder:
    """DataModule mixin: the training loader's :class:`EpochSampler` continues where the
    checkpoint a run resumes from stopped.

    The position is kept in the DataModule's checkpoint state, which Lightning restores before
    it builds the training loader (and before worker processes prefetch its first batches).
    """

    trainer: Any
    _train_position: tuple[int, int] = (0, 0)

    def state_dict(self) -> dict[str, Any]:
        if self.trainer is None:
            return {}
        return {"train_position": list(training_position(self.trainer))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._train_position = tuple(state.get("train_position", (0, 0)))

    def train_sampler(self, dataset: Sized, batch_size: int) -> EpochSampler:
        """The sampler of a training loader with ``batch_size`` images per batch."""
        sampler = EpochSampler(dataset)
        epoch, done = self._train_position
        sampler.resume_at(epoch, done * batch_size)
        return sampler
