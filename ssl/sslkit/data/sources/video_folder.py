"""Any folder of video clips: class sub-folders, or a CSV of paths and labels, like the image
folder; decoded with PyAV.

Decoder choice (``experiments/video_volumes/bench_decoders.py``): PyAV's wheels bundle FFmpeg's
libraries and codecs, so ``pip install av`` decodes H.264 on a clean machine. torchcodec (the
PyTorch project's decoder) loads the system's FFmpeg shared libraries at run time and failed to
load on a machine without them, which is what CI has, so PyAV is the decoder here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from sslkit.data.sources.base import CorruptDataError, as_targets, label_of
from sslkit.data.sources.folder import ImageFolder

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
#: Kinetics-400 statistics, those of torchvision's video weights.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def read_video(path: Path, num_frames: int, image_size: int) -> Tensor:
    """The central ``num_frames`` frames of a video file as ``(3, num_frames, S, S)`` uint8,
    the shorter side resized to ``S = image_size`` (antialiased) and centre-cropped.

    A video shorter than ``num_frames`` repeats its last frame. A file that cannot be opened or
    decoded, or holds no video frame, raises :class:`CorruptDataError` naming it.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("it holds no video stream")
            # One swscale thread: PyAV keeps the scaler between frames, and a DataLoader worker
            # forked after this process scaled a frame with swscale's own threads waited forever
            # for threads that do not exist in the child (tests/test_video.py).
            frames = [
                frame.to_ndarray(format="rgb24", threads=1) for frame in container.decode(video=0)
            ]
    except (av.FFmpegError, OSError, ValueError, IndexError) as err:
        raise CorruptDataError(
            f"Cannot decode video {path}: {err}. Remove or replace this file."
        ) from None
    if not frames:
        raise CorruptDataError(
            f"Cannot decode video {path}: it holds no frame. Remove or replace this file."
        )
    start = max(0, (len(frames) - num_frames) // 2)
    chosen = frames[start : start + num_frames]
    chosen += [chosen[-1]] * (num_frames - len(chosen))
    video = torch.from_numpy(np.stack(chosen)).permute(0, 3, 1, 2).float()  # (F, 3, H, W)
    height, width = video.shape[-2:]
    scale = image_size / min(height, width)
    size = (max(image_size, round(height * scale)), max(image_size, round(width * scale)))
    if size != (height, width):
        video = F.interpolate(video, size=size, mode="bilinear", antialias=True)
    top, left = (size[0] - image_size) // 2, (size[1] - image_size) // 2
    video = video[..., top : top + image_size, left : left + image_size]
    return video.round_().clamp_(0, 255).to(torch.uint8).transpose(0, 1).contiguous()


class VideoFiles(Dataset):
    """Video files decoded on access into ``(3, num_frames, S, S)`` uint8 tensors (in DataLoader
    workers); ``targets`` are class ids or multi-hot rows, see ``LabelledDataset``."""

    def __init__(
        self,
        files: Sequence[Path],
        targets: Sequence[int] | np.ndarray,
        num_frames: int,
        image_size: int,
    ) -> None:
        self.files = list(files)
        self.targets = as_targets(targets)
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        video = read_video(self.files[index], self.num_frames, self.image_size)
        return video, label_of(self.targets, index)


class VideoFolder(ImageFolder):
    """A folder of video clips, RGB at ``image_size``: ``root/<class>/<clip>.mp4``, or a CSV of
    ``path,label1;label2;...`` rows (``labels_csv``), with the test split as for
    :class:`~sslkit.data.ImageFolder`.

    Each clip gives its central ``num_frames`` frames at the file's frame rate (the training
    views take clips of ``data.frames`` frames ``data.stride`` apart inside them). Files are
    decoded when a batch needs them, in DataLoader workers; ``mean``/``std`` default to
    Kinetics-400's.
    """

    spatial_dims = 3

    extensions = VIDEO_EXTENSIONS
    kind = "video"

    def __init__(
        self,
        root: str | Path,
        test_root: str | Path | None = None,
        image_size: int = 112,
        num_frames: int = 16,
        test_fraction: float = 0.2,
        seed: int = 0,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        name: str | None = None,
        labels_csv: str | Path | None = None,
        test_labels_csv: str | Path | None = None,
    ) -> None:
        if isinstance(num_frames, bool) or int(num_frames) < 1:
            raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}.")
        super().__init__(
            root,
            test_root=test_root,
            image_size=image_size,
            test_fraction=test_fraction,
            seed=seed,
            mean=mean,
            std=std,
            name=name or Path(root).expanduser().name or "videofolder",
            labels_csv=labels_csv,
            test_labels_csv=test_labels_csv,
        )
        self.num_frames = int(num_frames)

    def dataset_of(self, files: list[Path], targets: list[int] | np.ndarray) -> VideoFiles:
        return VideoFiles(files, targets, self.num_frames, self.image_size)
