"""NNCLR (Dwibedi et al. 2021): each view's positive is its nearest neighbour among past
projections.

InfoNCE between the prediction of one view and the nearest neighbour, in a support set of
projections of earlier batches, of the other view's projection: the positives are other images
that look alike, not only another view of the same image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import NNCLRPredictionHead, NNCLRProjectionHead
from torch import Tensor, nn

from sslkit.distributed import gather_with_grad
from sslkit.methods.base import SSLMethod, split_views
from sslkit.models.backbones import Backbone


def nearest_neighbours(queries: Tensor, support: Tensor, filled: Tensor | int) -> Tensor:
    """The row of ``support[:filled]`` nearest to each query in cosine similarity.

    For each query q_i the result is s_j with j = argmax_{j < filled} cos(q_i, s_j), the
    first such j on ties; with ``filled == 0`` it is q_i itself. The rows returned are
    L2-normalised.

    Args:
        queries: ``(N, D)`` embeddings.
        support: ``(M, D)`` support set; only its first ``filled`` rows are candidates.
        filled: how many rows of ``support`` hold embeddings (a tensor: no host sync).

    Returns:
        ``(N, D)`` nearest neighbours, detached.
    """
    queries = F.normalize(queries.detach(), dim=1)
    support = F.normalize(support.detach(), dim=1)
    filled = torch.as_tensor(filled, device=support.device)
    similarity = queries @ support.T
    empty_rows = torch.arange(support.shape[0], device=support.device) >= filled
    similarity = similarity.masked_fill(empty_rows, float("-inf"))
    found = support[similarity.argmax(dim=1)]
    return torch.where(filled > 0, found, queries)


class SupportSet(nn.Module):
    """A first-in-first-out set of ``size`` L2-normalised embeddings of width ``dim``.

    The embeddings, the position of the next write and how many rows are filled are
    persistent buffers: they are in ``state_dict`` and every checkpoint, so a resumed run
    looks up the same neighbours. Rows are written in the order given, wrapping around after
    the last one; until the set is full only the filled rows are candidates of
    :meth:`nearest`.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"method.support_set_size must be a positive integer, got {size!r}.")
        self.size = size
        self.register_buffer("embeddings", torch.zeros(size, dim))
        self.register_buffer("next_row", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def nearest(self, queries: Tensor) -> Tensor:
        """The nearest filled row of each query (the query itself while the set is empty)."""
        return nearest_neighbours(queries, self.embeddings, self.filled)

    @torch.no_grad()
    def add(self, embeddings: Tensor) -> None:
        """Write ``embeddings`` (L2-normalised here) over the oldest rows, in order."""
        embeddings = F.normalize(embeddings.detach(), dim=1)[-self.size :]
        count = embeddings.shape[0]
        rows = (self.next_row + torch.arange(count, device=self.next_row.device)) % self.size
        self.embeddings[rows] = embeddings.to(self.embeddings.dtype)
        self.next_row.copy_((self.next_row + count) % self.size)
        self.filled.copy_(torch.clamp(self.filled + count, max=self.size))


class NNCLR(SSLMethod):
    """Backbone + projector + predictor; the positive of each view is the nearest neighbour of
    its projection in a support set of past projections, contrasted with NT-Xent against the
    prediction of the other view, symmetrised over the two views::

        loss = (ntxent(NN(z_a), p_b) + ntxent(NN(z_b), p_a)) / 2

    with z the projections, p = predictor(z) and ntxent lightly's ``NTXentLoss`` (the 2N-way
    SimCLR loss, negatives gathered from every process). The nearest neighbours carry no
    gradient. Before the support set holds any embedding, NN(z) is z itself.

    The support set (``support_set``, persistent buffers) receives the first view's
    projections of the global batch, gathered from every process in rank order, after each
    optimiser step, so that several processes hold the set one process on the global batch
    would, and a training step depends only on the weights, the set and the batch. Its size
    must be a multiple of the embeddings added per step (the global batch) and at most the
    size of the training set; both are checked at the start of training.

    Args:
        backbone: the encoder being pretrained.
        temperature: NT-Xent temperature (0.1 in NNCLR).
        projection_dim: output size of projector and predictor (256 in NNCLR).
        hidden_dim: hidden width of the 3-layer projector (2048 in NNCLR).
        prediction_hidden_dim: hidden width of the predictor (4096 in NNCLR).
        support_set_size: embeddings in the support set (98304 in NNCLR).
        **kwargs: optimiser, schedule and probe settings of ``SSLMethod``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        temperature: float = 0.1,
        projection_dim: int = 256,
        hidden_dim: int = 2048,
        prediction_hidden_dim: int = 4096,
        support_set_size: int = 98304,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if not temperature > 0:
            raise ValueError(f"method.temperature must be > 0, got {temperature}.")
        self.temperature = temperature
        self.projector = NNCLRProjectionHead(backbone.feature_dim, hidden_dim, projection_dim)
        self.predictor = NNCLRPredictionHead(projection_dim, prediction_hidden_dim, projection_dim)
        self.support_set = SupportSet(support_set_size, projection_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)
        # Gathered first-view projections of the steps since the last optimiser step.
        self._pending: list[Tensor] = []

    @property
    def support_set_size(self) -> int:
        return self.support_set.size

    def on_train_start(self) -> None:
        super().on_train_start()
        self.check_support_set_size()

    def check_support_set_size(self) -> None:
        """Stop with a clear message when the support set does not suit the run: its size must
        be a multiple of the embeddings added per step (the global batch) and at most the
        training set (the training set is checked when the trainer has a datamodule)."""
        size = self.support_set_size
        per_step = self.batch_size * self.trainer.world_size
        train_size = _training_set_size(self.trainer)
        if size % per_step:
            suggestion = max(per_step, size // per_step * per_step)
            if train_size is not None and suggestion > train_size:
                suggestion = max(per_step, train_size // per_step * per_step)
            raise ValueError(
                f"method.support_set_size={size} is not a multiple of the {per_step} embeddings "
                f"added per step (data.batch_size={self.batch_size} x {self.trainer.world_size} "
                f"process(es)); set method.support_set_size={suggestion}."
            )
        if train_size is not None and size > train_size:
            suggestion = train_size // per_step * per_step
            fix = (
                f"set method.support_set_size={suggestion}"
                if suggestion
                else "use a larger training set"
            )
            raise ValueError(
                f"method.support_set_size={size} is larger than the training set "
                f"({train_size} images), so it would hold the same images several times; "
                f"{fix}."
            )

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        view_a, view_b = split_views(views, 2, "NNCLR")
        features = self.backbone(torch.cat([view_a, view_b]))
        projections = self.projector(features)
        p_a, p_b = self.predictor(projections).chunk(2)
        z_a, z_b = projections.detach().chunk(2)
        nn_a, nn_b = self.support_set.nearest(z_a), self.support_set.nearest(z_b)
        loss = 0.5 * (self.criterion(nn_a, p_b) + self.criterion(nn_b, p_a))
        self._pending.append(gather_with_grad(z_a))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss + self.online_probe_loss(features[: len(view_a)], targets)

    def after_optimizer_step(self) -> None:
        """Move the teachers (none here), then add the projections of the batches of this
        optimiser step to the support set, in order."""
        super().after_optimizer_step()
        for embeddings in self._pending:
            self.support_set.add(embeddings)
        self._pending.clear()


def _training_set_size(trainer: Any) -> int | None:
    """Images in the trainer's training set; None when the trainer has no datamodule."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None:
        return None
    if callable(getattr(datamodule, "dataset", None)):
        return len(datamodule.dataset("train"))
    loader = getattr(trainer, "train_dataloader", None)
    dataset = getattr(loader, "dataset", None)
    return len(dataset) if dataset is not None else None
