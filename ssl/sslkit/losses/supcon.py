"""Supervised contrastive loss (SupCon, Khosla et al. 2020), the L_out form."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sslkit.distributed import gather_with_grad, is_distributed, rank, world_size


def supcon(
    views: Sequence[Tensor],
    labels: Tensor,
    temperature: float,
    *,
    gather_distributed: bool = True,
) -> Tensor:
    """SupCon loss (L_out) of V views of the same N labelled samples.

    Let u_1..u_VN be the L2-normalised rows of the views, view after view, y_i the label of
    the sample of u_i, s_ij = u_i . u_j / temperature, A(i) = {j != i} every other row and
    P(i) = {p in A(i) : y_p = y_i} the other rows of the same class (the other views of the
    sample of u_i among them). Then

        loss = 1/|I| * sum_{i in I}  -1/|P(i)| * sum_{p in P(i)}
                   log( exp(s_ip) / sum_{a in A(i)} exp(s_ia) )

    over the anchors I = {i : P(i) non-empty}: an anchor without a positive (a class with a
    single sample and a single view in the batch) is left out, as in SupCon. When no anchor
    has a positive the loss is a zero that still reaches every input. With two views and one
    sample per class, P(i) is the other view alone and the loss is SimCLR's InfoNCE.

    Under data-parallel training (an initialised `torch.distributed` group with more than one
    process) and `gather_distributed=True`, the candidates j range over the rows and labels of
    all processes, gathered with gradients, while the anchors i stay the local ones; each
    process divides its anchors' sum by the |I| of the global batch and multiplies by the
    number of processes, so that the mean of the processes' losses, and under DDP's gradient
    averaging the update, equal one process holding the global batch. All processes must pass
    the same number of views and samples.

    Args:
        views: V >= 1 tensors (N, D); row n of each is a view of sample n.
        labels: (N,) integer class of each sample (every sample labelled, i.e. >= 0).
        temperature: Positive softmax temperature.
        gather_distributed: Take candidates (and labels) from all processes.

    Returns:
        The scalar loss.
    """
    _check_inputs(views, labels, temperature)
    n = views[0].shape[0]
    z = torch.stack([F.normalize(view, dim=1) for view in views])  # (V, N, D)
    num_views, _, dim = z.shape
    anchors = z.reshape(num_views * n, dim)
    anchor_labels = labels.repeat(num_views)

    if gather_distributed and is_distributed():
        # One collective for all views: (world_size * V, N, D) -> view-major global rows.
        gathered = gather_with_grad(z)
        candidates = gathered.view(world_size(), num_views, n, dim).transpose(0, 1).reshape(-1, dim)
        global_labels = gather_with_grad(labels)
        offset, n_global, processes = rank() * n, world_size() * n, world_size()
    else:
        candidates, global_labels = anchors, labels
        offset, n_global, processes = 0, n, 1
    candidate_labels = global_labels.repeat(num_views)

    logits = anchors @ candidates.T / temperature
    local = torch.arange(offset, offset + n, device=logits.device)
    self_index = torch.cat([local + v * n_global for v in range(num_views)])
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(num_views * n, device=logits.device), self_index] = True
    logits = logits.masked_fill(is_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)

    positive = (anchor_labels[:, None] == candidate_labels[None, :]) & ~is_self
    positives = positive.sum(dim=1)
    per_anchor = -log_prob.masked_fill(~positive, 0.0).sum(dim=1) / positives.clamp(min=1)

    # |I| of the global batch: rows whose class has another row there.
    _, class_of, class_size = torch.unique(global_labels, return_inverse=True, return_counts=True)
    anchors_with_positive = int((num_views * class_size[class_of] > 1).sum()) * num_views
    if anchors_with_positive == 0:
        return anchors.sum() * 0.0
    return per_anchor[positives > 0].sum() * (processes / anchors_with_positive)


def _check_inputs(views: Sequence[Tensor], labels: Tensor, temperature: float) -> None:
    if len(views) == 0:
        raise ValueError("supcon needs at least one view, got none.")
    shapes = {tuple(view.shape) for view in views}
    if len(shapes) != 1 or views[0].ndim != 2:
        raise ValueError(
            "supcon expects views of one 2-D (batch, dim) shape (row n of each is a view of "
            f"sample n), got shapes {sorted(shapes)}."
        )
    n = views[0].shape[0]
    if n == 0:
        raise ValueError("supcon needs at least one sample, got an empty batch.")
    if labels.ndim != 1 or labels.shape[0] != n or labels.is_floating_point():
        raise ValueError(
            f"supcon expects (N,) integer class labels, one per sample, with N={n}; got a "
            f"{labels.dtype} tensor of shape {tuple(labels.shape)} (multi-hot labels have no "
            "single class to take positives from)."
        )
    if bool((labels < 0).any()):
        raise ValueError(
            f"supcon needs a class label for every sample, but {int((labels < 0).sum())} of "
            f"the {n} are unlabelled (label -1)."
        )
    if not temperature > 0:
        raise ValueError(f"supcon temperature must be > 0, got {temperature}.")
