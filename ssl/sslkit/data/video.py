"""Videos in the DataModule: clips of ``frames`` frames ``stride`` apart, clip views made per
batch on the training device, and fixed clips for evaluation.

A video source (:class:`~sslkit.data.SyntheticClips`, :class:`~sslkit.data.VideoFolder`) gives
videos of ``source.num_frames`` frames as ``(C, F, H, W)`` uint8 items, held in memory
(:class:`~sslkit.data.TensorArrayDataset`, a batch is one gather) or decoded per item in DataLoader workers.
Pretraining batches are uint8 ``(B, C, F, H, W)`` that the clip views
(:class:`~sslkit.augment.clips.ClipViews`) turn into ``(B, C, frames, S, S)`` views once on
the device; evaluation batches are the un-augmented centre clip of each video, or (for the
multi-clip result) one of ``eval_clips`` evenly spaced clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sslkit.augment.clips import check_clip, clip_frames, clip_starts
from sslkit.data.datamodule import SSLDataModule, SubsetDataset, TensorImages


class ClipsOf(Dataset):
    """The frames ``index`` of each video of a per-item ``dataset``, normalised float32."""

    def __init__(
        self, dataset: Dataset, index: Sequence[int], mean: Sequence[float], std: Sequence[float]
    ) -> None:
        self.dataset = dataset
        self.index = list(index)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int) -> tuple[Tensor, Any]:
        video, label = self.dataset[item]
        clip = video[:, self.index].float().div_(255)
        return clip.sub_(self.mean).div_(self.std), label


class VideoDataModule(SSLDataModule):
    """:class:`~sslkit.data.SSLDataModule` for video sources: clips of ``frames`` frames
    ``stride`` apart.

    - ``train_dataloader``: ``(views, labels)``, ``views`` the clip views ``augment(...,
      frames=, stride=)`` makes of each uint8 batch on the training device.
    - ``eval_dataloader(split)``: the un-augmented centre clip of each labelled video;
      ``eval_dataloader(split, clip=k)`` the k-th of ``eval_clips`` evenly spaced clips, whose
      features the multi-clip evaluation averages per video (``eval_clips=1``: none).

    The other keys are :class:`~sslkit.data.SSLDataModule`'s.
    """

    def __init__(
        self,
        source: Any,
        augment: Any,
        frames: int = 8,
        stride: int = 1,
        eval_clips: int = 4,
        **loader: Any,
    ) -> None:
        super().__init__(source, augment, **loader)
        check_clip(frames, stride)
        if isinstance(eval_clips, bool) or int(eval_clips) < 1:
            raise ValueError(f"data.eval_clips must be a positive integer, got {eval_clips!r}.")
        self.frames = int(frames)
        self.stride = int(stride)
        self.eval_clips = int(eval_clips)

    @property
    def num_frames(self) -> int:
        """Frames per video of the source."""
        return self.source.num_frames

    def setup(self, stage: str | None = None) -> None:
        check_clip(self.frames, self.stride, self.num_frames)
        super().setup(stage)

    def train_dataloader(self) -> DataLoader:
        """Shuffled ``(views, labels)``: uint8 video batches, turned into clip views on the
        device (:meth:`on_after_batch_transfer`)."""
        train = self.dataset("train")
        self.check_train_size(len(train))
        views = self.augment(
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            in_channels=self.in_channels,
            frames=self.frames,
            stride=self.stride,
        )
        if getattr(views, "backend", None) != "batched":
            raise ValueError(
                f"{self.name} is a video dataset: it needs clip views (augment=clips or "
                f"augment=clips_byol), got {views!r}."
            )
        self.batched_views = views
        tensors = self._in_memory("train")
        dataset = TensorImages(*tensors) if tensors is not None else train
        return self._loader(dataset, self.batch_size, train=True)

    def eval_dataloader(self, split: str, clip: int | None = None) -> DataLoader:
        """Un-augmented, normalised ``(clips, labels)`` of a split's labelled videos, in a fixed
        order: the centre clip, or with ``clip=k`` the k-th of ``eval_clips`` evenly spaced."""
        count = 1 if clip is None else self.eval_clips
        starts = clip_starts(self.num_frames, self.frames, self.stride, count)
        index = clip_frames(starts[clip or 0], self.frames, self.stride)
        keep = self.labelled_indices(split)
        if len(keep) == len(self.dataset(split)):
            keep = None
        tensors = self._in_memory(split)
        if tensors is not None:
            videos, labels = tensors
            if keep is not None:
                rows = torch.as_tensor(keep, dtype=torch.long)
                videos, labels = videos[rows], labels[rows]
            clips = TensorImages(videos[:, :, index], labels, self.mean, self.std)
            return self._loader(clips, self.eval_batch_size, train=False)
        dataset = self.dataset(split)
        if keep is not None:
            dataset = SubsetDataset(dataset, keep.tolist())
        clips = ClipsOf(dataset, index, self.mean, self.std)
        return self._loader(clips, self.eval_batch_size, train=False)
