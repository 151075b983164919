"""MoCo v2 (He et al. 2020; Chen et al. 2020): queries against a momentum key encoder's keys and
a queue of the keys of earlier batches."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import concat_all_gather
from torch import Tensor, nn

from sslkit.distributed import is_distributed
from sslkit.losses.moco import moco_info_nce
from sslkit.methods.base import SSLMethod, split_views
from sslkit.models.backbones import Backbone
from sslkit.models.ema import EMATeacher


class KeyQueue(nn.Module):
    """A first-in first-out queue of ``size`` L2-normalised keys of width ``dim``.

    The keys and the write position are registered buffers, so they are in the method's
    ``state_dict`` and in every checkpoint, and a resumed run continues the queue exactly. As in
    MoCo, the queue starts full of random unit vectors (drawn from a generator of its own with
    ``seed``, so every process starts with the same queue and the global random state is left
    alone), which the first ``size`` enqueued keys replace. :meth:`enqueue` gathers the keys of
    every process in rank order before writing them, so every process holds the same queue, the
    one a single process would hold on the global batch; the newest keys overwrite the oldest,
    wrapping around the end.
    """

    def __init__(self, size: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"a key queue needs size >= 1 and dim >= 1, got {size} and {dim}.")
        self.size = size
        start = torch.randn(size, dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("keys", F.normalize(start, dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def negatives(self) -> Tensor:
        """A copy of the keys held ``(size, dim)``, in slot order (it outlives the next
        :meth:`enqueue`, which writes in place)."""
        return self.keys.clone()

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """L2-normalise ``keys`` (N, dim), gather them from every process in rank order and
        write them after the newest keys (no gradient)."""
        keys = F.normalize(keys.detach(), dim=1).to(self.keys.dtype)
        if is_distributed():
            keys = concat_all_gather(keys.contiguous())
        count = keys.shape[0]
        if count > self.size:
            raise ValueError(
                f"{count} keys cannot enter a queue of {self.size}: set method.queue_size to "
                f"at least {count} (a multiple of the keys enqueued per step)."
            )
        start = int(self.ptr)
        index = (start + torch.arange(count, device=self.keys.device)) % self.size
        self.keys[index] = keys
        self.ptr.fill_((start + count) % self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.keys.shape[1]}"


class MoCoV2(SSLMethod):
    """Query encoder (backbone + MoCo v2 MLP head) trained with InfoNCE against the keys of a
    momentum key encoder and a queue of the keys of earlier batches.

    The key encoder (``teacher_ema``, an :class:`~sslkit.models.EMATeacher` of the backbone and
    the projector) is a frozen copy moved towards the query encoder after every optimiser step
    with momentum ``momentum`` (constant, as in MoCo, unless ``final_momentum`` sets a cosine
    rise to it; logged as ``train/tau``). The loss is symmetric over the two views (by default): the
    queries of view a against the keys of view b and the queue, and the other way round, averaged
    (:func:`~sslkit.losses.moco.moco_info_nce`); ``symmetric=False`` is MoCo v2's own single order.

    After the loss, the keys of the first view (of the second without ``symmetric``) enter the queue (gathered from every
    process in rank order, without gradient): one key per image per step, so a queue of
    ``queue_size`` holds keys of ``queue_size`` different images rather than two near-identical
    keys of half as many. ``queue_size`` must be a multiple of the keys enqueued per step (the
    global batch) and at most the training set, or training stops at its start with a message
    naming the value to set.

    Args:
        backbone: the query encoder's backbone (its EMA copy is the key encoder's).
        temperature: softmax temperature of the InfoNCE loss (0.2 in MoCo v2).
        projection_dim: output width of the projection head (128 in MoCo v2).
        hidden_dim: hidden width of the projection head (2048 in MoCo v2).
        batch_norm: batch norm after each layer of the projection head (MoCo v3's head; MoCo
            v2's has none).
        queue_size: negative keys held (65536 in MoCo for ImageNet).
        momentum: the key encoder's EMA momentum (0.999 in MoCo).
        final_momentum: momentum at the last step of a cosine rise from ``momentum``; None
            keeps ``momentum`` constant.
        symmetric: both view orders (two query and two key passes per image); False is MoCo
            v2's own loss, the queries of the first view against the keys of the second (one
            pass of each, about half the compute per image).
        **kwargs: optimiser, schedule and probe settings of ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        temperature: float = 0.2,
        projection_dim: int = 128,
        hidden_dim: int = 2048,
        batch_norm: bool = False,
        queue_size: int = 65536,
        momentum: float = 0.999,
        final_momentum: float | None = None,
        symmetric: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if not temperature > 0:
            raise ValueError(f"method.temperature must be > 0, got {temperature}.")
        if queue_size < 1:
            raise ValueError(
                f"method.queue_size must be a positive number of keys, got {queue_size}."
            )
        for key, value in (("momentum", momentum), ("final_momentum", final_momentum)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"method.{key} is a momentum in [0, 1], got {value}.")
        self.temperature = temperature
        self.symmetric = symmetric
        self.queue_size = queue_size
        self.projector = MoCoProjectionHead(
            backbone.feature_dim, hidden_dim, projection_dim, batch_norm=batch_norm
        )
        self.teacher_ema = EMATeacher(
            {"backbone": self.backbone, "projector": self.projector},
            base_momentum=momentum,
            final_momentum=momentum if final_momentum is None else final_momentum,
        )
        self.queue = KeyQueue(queue_size, projection_dim)

    def evaluation_encoders(self) -> dict[str, nn.Module]:
        """The query encoder's backbone and the key encoder's (``eval.encoder=teacher``)."""
        return {"student": self.backbone, "teacher": self.teacher_ema.backbone}

    def on_fit_start(self) -> None:
        self.check_queue_size()

    def check_queue_size(self) -> None:
        """Stop before training when ``queue_size`` is not a multiple of the keys enqueued per
        step (the global batch) or exceeds the training set (skipped when the trainer has no
        data module to tell its size)."""
        trainer = self.trainer
        per_step = self.batch_size * trainer.world_size
        size = self.queue_size
        datamodule = getattr(trainer, "datamodule", None)
        train_size = len(datamodule.dataset("train")) if hasattr(datamodule, "dataset") else None
        if train_size is not None and size > train_size:
            fits = max(per_step, train_size // per_step * per_step)
            raise ValueError(
                f"method.queue_size={size} is larger than the training set ({train_size} "
                "images): the queue would hold older keys of a query's own image as negatives. "
                f"Set method.queue_size={fits} (a multiple of the {per_step} keys enqueued per "
                "step)."
            )
        if size % per_step:
            lower = size // per_step * per_step
            suggestion = lower if lower else per_step
            raise ValueError(
                f"method.queue_size={size} is not a multiple of the {per_step} keys enqueued "
                f"per step (data.batch_size={self.batch_size} x {trainer.world_size} "
                f"process(es)), so the queue would not drop whole batches. Set "
                f"method.queue_size={suggestion}."
            )

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        view_a, view_b = split_views(views, 2, "MoCoV2")
        if not self.symmetric:  # MoCo v2's own loss: queries of view a, keys of view b
            features = self.backbone(view_a)
            queries = self.projector(features)
            with torch.no_grad():
                teacher = self.teacher_ema
                keys = teacher.projector(teacher.backbone(view_b))
            loss = moco_info_nce(queries, keys, self.queue.negatives(), self.temperature)
            self.queue.enqueue(keys)
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
            return loss + self.online_probe_loss(features, targets)
        images = torch.cat([view_a, view_b])
        features = self.backbone(images)
        q_a, q_b = self.projector(features).chunk(2)
        with torch.no_grad():
            teacher = self.teacher_ema
            k_a, k_b = teacher.projector(teacher.backbone(images)).chunk(2)
        negatives = self.queue.negatives()
        loss = 0.5 * (
            moco_info_nce(q_a, k_b, negatives, self.temperature)
            + moco_info_nce(q_b, k_a, negatives, self.temperature)
        )
        self.queue.enqueue(k_a)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss + self.online_probe_loss(features[: len(view_a)], targets)
