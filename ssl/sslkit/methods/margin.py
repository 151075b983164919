"""What the margin-based contrastive methods (pairwise and triplet) share.

Both embed every view with the backbone and a projection head, optionally L2-normalise, take
positives either from the views of one image (``positives=views``, no labels) or from the
class labels (``positives=labels``), mine one triplet per (anchor, positive) pair and log how
the margin is doing. A subclass only turns the mined triplets into its loss.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import Tensor

from sslkit.distributed import gather_with_grad, rank, world_size
from sslkit.losses.mining import check_mining, mine_triplets
from sslkit.methods.base import SSLMethod, require_labels
from sslkit.models.backbones import Backbone

POSITIVES = ("views", "labels")


class MarginStats(NamedTuple):
    """Distances of the positive and negative pairs of a batch and which terms are non-zero."""

    positive_distance: Tensor
    negative_distance: Tensor
    active: Tensor


class MarginContrastive(SSLMethod):
    """Base of the margin methods: projection, positives, mining and their diagnostics.

    Under data-parallel training triplets are mined in the global batch: every process gathers
    the embeddings of all processes (with gradients), mines as one process would on the
    concatenated batch, and computes the terms of its own anchors, scaled so that the averaged
    gradients equal those of one process on the global batch. Positives and negatives can thus
    come from any process, and the candidates grow with ``data.batch_size`` times the processes.

    Args:
        backbone: the encoder being pretrained.
        positives: ``views`` (two crops of one image are positives, other images negatives)
            or ``labels`` (images of one class are positives, other classes negatives).
        mining: how each anchor's negative is chosen: ``random``, ``hard`` or ``semihard``.
        margin: the loss margin, in the units of the (normalised) embedding distances.
        normalize: L2-normalise embeddings, so distances lie in [0, 2] and margins transfer.
        projection_dim: output size of the projection head.
        hidden_dim: hidden size of the projection head.
        **kwargs: the ``SSLMethod`` arguments (optimizer, schedule, probe, ...).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        positives: str = "views",
        mining: str = "random",
        margin: float,
        normalize: bool = True,
        projection_dim: int = 128,
        hidden_dim: int = 512,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        name = type(self).__name__
        if positives not in POSITIVES:
            raise ValueError(
                f"method.positives={positives!r} is not known; choose from {', '.join(POSITIVES)}."
            )
        check_mining(mining)
        if not margin > 0:
            raise ValueError(f"method.margin must be > 0, got {margin}.")
        if positives == "labels" and self.multilabel:
            raise ValueError(
                f"{name} with method.positives=labels needs single-label classes, but this "
                "dataset is multi-label; use method.positives=views."
            )
        self.positives = positives
        self.mining = mining
        self.margin = float(margin)
        self.normalize = bool(normalize)
        self.projector = SimCLRProjectionHead(backbone.feature_dim, hidden_dim, projection_dim)

    def positive_identity(self, views: list[Tensor], targets: Tensor) -> Tensor:
        """Identity of each row of ``torch.cat(views)``: its image index or its class label."""
        name = type(self).__name__
        if self.positives == "views":
            if len(views) < 2:
                raise ValueError(
                    f"{name} with method.positives=views needs at least 2 augmented views per "
                    f"image but the batch has {len(views)}; use augment=simclr."
                )
            # Image indices unique across processes (every process has the same batch size).
            identity = torch.arange(len(targets), device=targets.device) + rank() * len(targets)
        else:
            require_labels(
                targets, f"{name} with method.positives=labels", "use method.positives=views"
            )
            identity = targets
        return identity.repeat(len(views))

    def margin_loss(
        self, embeddings: Tensor, anchor: Tensor, positive: Tensor, negative: Tensor
    ) -> tuple[Tensor, MarginStats]:
        """The method's loss on mined triplets (index tensors into ``embeddings``)."""
        raise NotImplementedError

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        views = list(views)
        identity = self.positive_identity(views, targets)
        features = self.backbone(torch.cat(views))
        embeddings = self.projector(features)
        if self.normalize:
            embeddings = F.normalize(embeddings, dim=1)
        # The global batch, view by view in process order, as one process would hold it.
        everyone = torch.cat([gather_with_grad(chunk) for chunk in embeddings.chunk(len(views))])
        identities = torch.cat([gather_with_grad(chunk) for chunk in identity.chunk(len(views))])
        owner = torch.arange(world_size(), device=everyone.device).repeat_interleave(len(targets))
        triplets = mine_triplets(everyone.detach(), identities, self.mining, self.margin)
        mine = owner.repeat(len(views))[triplets[0]] == rank()
        mined = len(triplets[0])
        log = {"on_step": True, "on_epoch": True}
        self.log("train/mined_fraction", mined / len(everyone), **log)
        if mine.any():
            loss, stats = self.margin_loss(everyone, *(t[mine] for t in triplets))
            # This process's share of the mean over all triplets, times the number of processes
            # (their gradients are averaged): one process on the global batch, exactly.
            loss = loss * (int(mine.sum()) / mined) * world_size()
            self.log("train/active_fraction", stats.active.float().mean(), **log)
            self.log("train/positive_distance", stats.positive_distance.mean(), **log)
            self.log("train/negative_distance", stats.negative_distance.mean(), **log)
        else:
            # No informative triplet in this batch (semihard mining found none): a zero loss
            # that still reaches every parameter, so the optimiser step is a no-op.
            loss = embeddings.sum() * 0.0
        self.log("train/loss", loss, prog_bar=True, **log)
        return loss + self.online_probe_loss(features[: len(targets)], targets)
