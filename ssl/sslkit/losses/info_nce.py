"""InfoNCE / NT-Xent, the contrastive loss of SimCLR."""

import torch
import torch.nn.functional as F
from torch import Tensor

from sslkit.distributed import gather_with_grad, is_distributed, rank, world_size


def info_nce(
    z_a: Tensor, z_b: Tensor, temperature: float, *, gather_distributed: bool = True
) -> Tensor:
    """NT-Xent loss (SimCLR) of two batches of embeddings of the same N samples.

    Let u_1..u_2N be the L2-normalised rows of `z_a` followed by those of `z_b`, so that
    u_i and its positive u_p(i) are two views of the same sample (z_a[i] <-> z_b[i]), and
    let s_ij = u_i . u_j / temperature be the scaled cosine similarities. Then

        loss = 1/(2N) * sum_i  -log( exp(s_{i,p(i)}) / sum_{j != i} exp(s_ij) )

    i.e. the mean over all 2N anchors of a (2N-1)-way cross-entropy that picks the other
    view of the same sample out of the 2N-2 views of the other samples. Normalising makes
    the loss depend only on directions, and a lower temperature weights hard negatives
    more strongly.

    Under data-parallel training (an initialised `torch.distributed` group with more than
    one process) and `gather_distributed=True`, the candidates j range over the embeddings
    of all processes, gathered with gradients, while the anchors i stay the 2N local ones:
    more negatives per anchor at the cost of one all-gather. All processes must then pass
    batches of the same size. The mean of this loss over the processes equals the loss of
    one process holding the global batch, and under DDP's gradient averaging so does the
    update.

    Args:
        z_a: (N, D) embeddings of the first view.
        z_b: (N, D) embeddings of the second view, row i from the same sample as z_a[i].
        temperature: Positive softmax temperature.
        gather_distributed: Use the embeddings of all processes as negatives.

    Returns:
        The scalar loss.
    """
    _check_inputs(z_a, z_b, temperature)
    n = z_a.shape[0]
    z_a = F.normalize(z_a, dim=1)
    z_b = F.normalize(z_b, dim=1)
    anchors = torch.cat([z_a, z_b])

    if gather_distributed and is_distributed():
        # One collective for both views: (world_size * 2, N, D) -> [all z_a ; all z_b].
        gathered = gather_with_grad(torch.stack([z_a, z_b]))
        candidates = gathered.view(-1, 2, *z_a.shape).transpose(0, 1).reshape(-1, z_a.shape[1])
        offset, n_global = rank() * n, world_size() * n
    else:
        candidates = anchors
        offset, n_global = 0, n

    logits = anchors @ candidates.T / temperature
    local = torch.arange(offset, offset + n, device=logits.device)
    self_index = torch.cat([local, local + n_global])
    positive_index = torch.cat([local + n_global, local])
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(2 * n, device=logits.device), self_index] = True
    logits = logits.masked_fill(is_self, float("-inf"))
    return F.cross_entropy(logits, positive_index)


def _check_inputs(z_a: Tensor, z_b: Tensor, temperature: float) -> None:
    if z_a.ndim != 2 or z_b.ndim != 2:
        raise ValueError(
            "info_nce expects 2-D (batch, dim) embeddings, got shapes "
            f"{tuple(z_a.shape)} and {tuple(z_b.shape)}; flatten the projector output first."
        )
    if z_a.shape != z_b.shape:
        raise ValueError(
            "info_nce expects z_a and z_b of the same shape (row i of each is a view of "
            f"sample i), got {tuple(z_a.shape)} and {tuple(z_b.shape)}."
        )
    if z_a.shape[0] == 0:
        raise ValueError("info_nce needs at least one sample, got an empty batch.")
    if not temperature > 0:
        raise ValueError(f"info_nce temperature must be > 0, got {temperature}.")
