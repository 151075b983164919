"""Clip views of videos: two clips of one video at different times, each with one spatial
augmentation shared by all of its frames, made per batch on the training device.

A video batch is ``(B, C, F, H, W)`` uint8. Each view draws, per video, the start of a clip of
``frames`` frames ``stride`` apart (uniformly among the starts that fit, independently per
view: temporal positives) and one draw of an image recipe's parameters (crop, flip, colour
jitter, grayscale, blur, solarisation; :func:`~sslkit.augment.batched.sample_view`), which is
then applied to every frame of that clip (:func:`~sslkit.augment.batched.render_view` on the
frames folded into the batch). So a flip flips the whole clip and the motion stays coherent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from sslkit.augment.batched import ViewParams, render_view, sample_view
from sslkit.augment.views import VIEW_ARGS, Views
from sslkit.configurable import configurable


def clip_span(frames: int, stride: int) -> int:
    """Frames of the video a clip of ``frames`` frames ``stride`` apart covers."""
    return (frames - 1) * stride + 1


def check_clip(frames: int, stride: int, num_frames: int | None = None) -> None:
    """Refuses a clip that is empty, has a stride below 1 or does not fit ``num_frames``."""
    if isinstance(frames, bool) or int(frames) < 1 or int(stride) < 1:
        raise ValueError(f"clips need frames >= 1 and stride >= 1, got {frames} and {stride}.")
    if num_frames is not None and clip_span(frames, stride) > num_frames:
        raise ValueError(
            f"a clip of {frames} frames at stride {stride} spans {clip_span(frames, stride)} "
            f"frames but the videos have {num_frames}. Lower data.frames or data.stride, or use "
            "longer videos (data.source.num_frames)."
        )


def clip_starts(num_frames: int, frames: int, stride: int, count: int) -> list[int]:
    """``count`` evenly spaced clip starts in a video of ``num_frames`` frames (one: the centre
    clip), the evaluation's fixed clips."""
    check_clip(frames, stride, num_frames)
    last = num_frames - clip_span(frames, stride)
    if count == 1:
        return [last // 2]
    return [round(i * last / (count - 1)) for i in range(count)]


def clip_frames(start: int, frames: int, stride: int) -> list[int]:
    """Frame indices of the clip starting at ``start``."""
    return [start + i * stride for i in range(frames)]


def repeat_params(params: ViewParams, times: int) -> ViewParams:
    """Each video's parameters repeated for its ``times`` frames (frames folded into the batch)."""
    return ViewParams(
        **{
            field.name: getattr(params, field.name).repeat_interleave(times, dim=0)
            for field in dataclasses.fields(params)
        }
    )


class ClipViews:
    """Clip views of ``(B, C, F, H, W)`` uint8 video batches, one per spec of ``views``.

    :meth:`batch` returns one normalised ``(B, C, frames, image_size, image_size)`` batch per
    view. ``backend`` is ``batched``: the DataModule hands over whole uint8 batches.
    """

    backend = "batched"

    def __init__(
        self,
        views: Views,
        *,
        frames: int,
        stride: int,
        strides: Sequence[int] | None = None,
    ) -> None:
        check_clip(frames, stride)
        for value in strides or ():
            check_clip(frames, value)
        self.views = views
        self.frames = int(frames)
        self.stride = int(stride)
        self.strides = [int(value) for value in strides] if strides else [self.stride]
        self.image_size = views.image_size
        self.in_channels = views.in_channels

    def __len__(self) -> int:
        return len(self.views)

    def batch(self, videos: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """Normalised clip views of a uint8 video batch, parameters drawn from ``generator``
        (default: torch's global CPU generator) so a seed gives the same views on any device."""
        if videos.ndim != 5 or videos.shape[1] != self.in_channels:
            raise ValueError(
                f"expected a (B, {self.in_channels}, F, H, W) video batch, got "
                f"{tuple(videos.shape)}."
            )
        n, channels, num_frames, height, width = videos.shape
        for stride in self.strides:
            check_clip(self.frames, stride, num_frames)
        choices = torch.tensor(self.strides)
        offsets = torch.arange(self.frames)
        mean = torch.tensor(self.views.mean, device=videos.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.views.std, device=videos.device).view(1, -1, 1, 1, 1)
        by_frame = videos.transpose(1, 2)  # (B, F, C, H, W)
        size = self.image_size
        out = []
        for spec in self.views.specs:
            if len(self.strides) == 1:
                strides = choices.expand(n)
            else:
                strides = choices[torch.randint(0, len(choices), (n,), generator=generator)]
            last = num_frames - (self.frames - 1) * strides  # starts that fit, per clip
            starts = (torch.rand(n, generator=generator) * last).long()
            index = (starts[:, None] + offsets * strides[:, None]).to(videos.device)
            rows = torch.arange(n, device=videos.device)[:, None]
            clips = by_frame[rows, index].reshape(n * self.frames, channels, height, width)
            if spec is None:
                frames = clips.float().div_(255)
            else:
                params = sample_view(spec, n, height, width, generator)
                frames = render_view(clips, repeat_params(params, self.frames), size)
            clip = frames.view(n, self.frames, channels, *frames.shape[-2:]).transpose(1, 2)
            out.append(clip.sub(mean).div_(std))
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(frames={self.frames}, stride={self.stride}, "
            f"strides={self.strides}, views={self.views!r})"
        )


@configurable(runtime=(*VIEW_ARGS, "frames", "stride"))
def clip_views(
    *,
    views: Callable[..., Views],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    frames: int,
    stride: int,
    strides: Sequence[int] | None = None,
) -> ClipViews:
    """Clip views with the spatial recipe ``views`` (an image view factory, e.g. a partial of
    :func:`~sslkit.augment.simclr_views` or :func:`~sslkit.augment.byol_views`), its
    distribution per clip; ``frames`` and ``stride`` come from the DataModule. ``strides``: each
    training clip draws its frame stride from this list (a different apparent speed per clip, so
    speed stops being a cue the two clips of a video share); default: ``stride`` for all.
    Evaluation clips keep ``data.stride``."""
    spatial = views(image_size=image_size, mean=mean, std=std, in_channels=in_channels)
    return ClipViews(spatial, frames=frames, stride=stride, strides=strides)
