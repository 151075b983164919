"""Frozen features of the train and test splits, extracted once and optionally kept on disk.

What is encoded is always picked by :func:`evaluation_encoder`, from the encoders a method
names in its one evaluation hook (``SSLMethod.evaluation_encoders``). Every protocol (kNN, linear probe at each label fraction, plots) reads the same
:class:`SplitFeatures`, so within a run the encoder sees each image once. Evaluating a
checkpoint again (another probe setting, another label fraction) reads the features from a
file next to the checkpoint instead of running the backbone: the file name is a hash of what
the features depend on (the checkpoint file's identity, the data, the encoder and the device),
so a changed checkpoint or dataset never reuses stale features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sslkit.eval.features import extract_features

log = logging.getLogger(__name__)

#: Bumped when the extraction changes, so files written by an older version are not reused.
CACHE_FORMAT = 1


@dataclass
class SplitFeatures:
    """Features ``(N, D)`` and labels of the un-augmented train and test splits, on the CPU."""

    train_features: Tensor
    train_labels: Tensor
    test_features: Tensor
    test_labels: Tensor


def encoders_of(model: nn.Module) -> dict[str, nn.Module]:
    """The encoders evaluation may pick by name: a method's own (``evaluation_encoders``), or
    the model itself, as ``student``, for a bare backbone."""
    offered = getattr(model, "evaluation_encoders", None)
    return offered() if callable(offered) else {"student": model}


def evaluation_encoder(model: nn.Module, name: str, *, model_name: str | None = None) -> nn.Module:
    """The encoder called ``name`` (``eval.encoder``) of ``model``: what the final protocols,
    the kNN monitor and ``sslkit-eval`` encode."""
    encoders = encoders_of(model)
    if name not in encoders:
        raise ValueError(
            f"eval.encoder={name!r} is not offered by {model_name or type(model).__name__}; "
            f"choose from {sorted(encoders)}"
        )
    return encoders[name]


def extract_split_features(
    encoder: Callable[[Tensor], Tensor] | nn.Module, datamodule: Any, device: torch.device
) -> SplitFeatures:
    """Encode the labelled images of both splits (``datamodule.eval_dataloader``)."""
    datamodule.setup("fit")
    train_features, train_labels = extract_features(
        encoder, datamodule.eval_dataloader("train"), device
    )
    test_features, test_labels = extract_features(
        encoder, datamodule.eval_dataloader("test"), device
    )
    return SplitFeatures(train_features, train_labels, test_features, test_labels)


def feature_cache_file(
    checkpoint: str | os.PathLike,
    *,
    data: Mapping[str, Any],
    encoder: str,
    device: torch.device,
) -> Path:
    """Where the features of ``checkpoint`` are kept: ``<checkpoint dir>/features/<hash>.pt``.

    The hash covers the checkpoint file's resolved path, size and modification time (so
    rewriting the checkpoint invalidates the file without reading gigabytes to hash them),
    the data config (which images, how they are prepared), the encoder name and the device
    type (CPU and GPU kernels differ in the last bits).
    """
    file = Path(checkpoint).resolve()
    stat = file.stat()
    identity = {
        "format": CACHE_FORMAT,
        "checkpoint": {"path": str(file), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "data": data,
        "encoder": encoder,
        "device": device.type,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    return file.parent / "features" / f"{file.stem}-{encoder}-{digest.hexdigest()[:16]}.pt"


def load_or_extract(
    encoder: Callable[[Tensor], Tensor] | nn.Module,
    datamodule: Any,
    device: torch.device,
    cache_file: Path | None = None,
) -> tuple[SplitFeatures, bool]:
    """The split features from ``cache_file`` when it holds them, else extracted (and saved).

    Returns the features and whether they came from the file. An unreadable file is
    re-extracted and rewritten; a file that cannot be written only costs the reuse.
    """
    if cache_file is not None and cache_file.is_file():
        try:
            return SplitFeatures(
                **torch.load(cache_file, map_location="cpu", weights_only=True)
            ), True
        except Exception as exc:  # a damaged cache is rebuilt, never trusted
            log.warning("ignoring unreadable feature cache %s: %s", cache_file, exc)
    features = extract_split_features(encoder, datamodule, device)
    if cache_file is not None:
        _save(features, cache_file)
    return features, False


def _save(features: SplitFeatures, path: Path) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.save(asdict(features), tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not write the feature cache %s: %s", path, exc)
    else:
        log.info("features cached in %s", path)
