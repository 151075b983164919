"""Feature extraction from a frozen encoder, the common first step of every protocol.

Both protocols run on cached feature tensors, so the encoder is applied exactly once per
image and the kNN and the 100-epoch linear probe never touch the backbone again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


def extract_features(
    encoder: Callable[[Tensor], Tensor] | nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Encode every ``(images, labels)`` batch of ``loader`` and return features and labels.

    The encoder runs under ``torch.inference_mode()`` in eval mode, so BatchNorm uses its
    running statistics and dropout is off: features must not depend on batch composition.
    If ``encoder`` is an ``nn.Module``, or a bound method of one (such as
    ``method.forward_features``), every submodule's train/eval mode is restored afterwards,
    even on error, so extraction in the middle of training leaves training untouched.

    Args:
        encoder: Maps a batch of images ``(B, ...)`` to features; outputs with more than
            two dimensions are flattened to ``(B, -1)``.
        loader: Iterable of ``(images, labels)`` batches, e.g. an un-augmented DataLoader.
        device: Where the encoder runs; the images are moved there.

    Returns:
        ``(features, labels)`` on the CPU: float32 ``(N, D)`` and int64 class ids ``(N,)``
        or float32 multi-hot ``(N, C)``.
    """
    module = encoder if isinstance(encoder, nn.Module) else getattr(encoder, "__self__", None)
    modes = {}
    if isinstance(module, nn.Module):
        modes = {submodule: submodule.training for submodule in module.modules()}
    features: list[Tensor] = []
    labels: list[Tensor] = []
    try:
        if isinstance(module, nn.Module):
            module.eval()
        with torch.inference_mode():
            for images, batch_labels in loader:
                output = encoder(images.to(device, non_blocking=True))
                features.append(output.reshape(output.shape[0], -1).float().cpu())
                labels.append(torch.as_tensor(batch_labels).cpu())
    finally:
        for submodule, training in modes.items():
            submodule.training = training
    if not features:
        raise ValueError("the loader yielded no batch: cannot extract features from no images")
    label_tensor = torch.cat(labels)
    label_tensor = label_tensor.float() if label_tensor.ndim == 2 else label_tensor.long()
    return torch.cat(features), label_tensor
