"""The multi-clip (video-level) result: the same protocols on features averaged over several
clips of each video.

A video's centre clip is what the standard protocols see; a clip of a few frames may miss what
happens elsewhere in the video, so video models are also scored on the mean of the features
of ``eval_clips`` evenly spaced clips per video. The metrics carry the prefix ``multiclip/``
(``multiclip/knn/top1@20``, ``multiclip/linear/top1``) and their settings name the clips.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from sslkit.eval.cache import SplitFeatures
from sslkit.eval.features import extract_features
from sslkit.eval.protocol import (
    KNNProtocol,
    LinearProtocol,
    ProtocolResult,
    run_protocols_on_splits,
)

PREFIX = "multiclip"


def clip_count(datamodule: Any) -> int:
    """The clips per video of the multi-clip result; 0 for data without clips."""
    count = getattr(datamodule, "eval_clips", 0)
    return int(count) if count and count > 1 else 0


def multiclip_features(
    encoder: Callable[[Tensor], Tensor] | nn.Module, datamodule: Any, device: torch.device
) -> SplitFeatures:
    """Per video, the mean of the features of each of ``datamodule.eval_clips`` clips."""
    splits = {}
    for split in ("train", "test"):
        features, labels = zip(
            *(
                extract_features(encoder, datamodule.eval_dataloader(split, clip=k), device)
                for k in range(datamodule.eval_clips)
            ),
            strict=True,
        )
        splits[f"{split}_features"] = torch.stack(features).mean(dim=0)
        splits[f"{split}_labels"] = labels[0]
    return SplitFeatures(**splits)


def add_multiclip_result(
    result: ProtocolResult,
    encoder: Callable[[Tensor], Tensor] | nn.Module,
    datamodule: Any,
    *,
    knn: KNNProtocol | None,
    linear: LinearProtocol | None,
    device: torch.device,
) -> ProtocolResult:
    """Adds the multi-clip metrics, per-class scores and settings to ``result`` (in place);
    nothing for data without clips."""
    count = clip_count(datamodule)
    if not count:
        return result
    features = multiclip_features(encoder, datamodule, device)
    clips = run_protocols_on_splits(features, datamodule, knn=knn, linear=linear, device=device)
    described = {
        "clips_per_video": count,
        "features": f"mean of the features of {count} evenly spaced clips per video",
    }
    result.metrics.update({f"{PREFIX}/{key}": value for key, value in clips.metrics.items()})
    result.per_class.update({f"{PREFIX}/{key}": value for key, value in clips.per_class.items()})
    settings = result.protocol.setdefault("settings", {})
    for name, value in clips.protocol["settings"].items():
        settings[f"{PREFIX}/{name}"] = {**value, **described}
    result.timings.update({f"{PREFIX}_{key}": value for key, value in clips.timings.items()})
    return result
