"""InfoNCE of queries against their keys: a queue of negative keys (MoCo v2) or the other keys
of the batch, gathered from every process (MoCo v3)."""

import torch
import torch.nn.functional as F
from lightly.models.utils import concat_all_gather
from torch import Tensor

from sslkit.distributed import is_distributed, rank


def moco_info_nce(queries: Tensor, keys: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE loss of N queries, each against its own key and a queue of negatives.

    Let q_i and k_i be the L2-normalised rows of `queries` and `keys` (q_i and k_i encode two
    views of sample i) and n_1..n_K the rows of `queue` (keys of earlier batches, already
    L2-normalised). With s_i+ = q_i . k_i / temperature and s_ij = q_i . n_j / temperature,

        loss = 1/N * sum_i  -log( exp(s_i+) / (exp(s_i+) + sum_j exp(s_ij)) )

    i.e. the mean over the queries of a (1+K)-way cross-entropy that picks the query's key out
    of the queue. The other keys of the batch are not negatives (as in MoCo), so the loss of a
    batch split over processes is the mean of the processes' losses when they hold the same
    queue. With an empty queue (K = 0) the loss is 0.

    Args:
        queries: (N, D) query embeddings (from the encoder being trained).
        keys: (N, D) key embeddings, row i the positive of queries[i]; the caller decides
            whether gradients flow into them (MoCo computes them without).
        queue: (K, D) negative keys, L2-normalised, K >= 0.
        temperature: positive softmax temperature.

    Returns:
        The scalar loss.
    """
    if queries.ndim != 2 or queries.shape != keys.shape:
        raise ValueError(
            "moco_info_nce expects queries and keys of the same 2-D shape (batch, dim), got "
            f"{tuple(queries.shape)} and {tuple(keys.shape)}."
        )
    if queue.ndim != 2 or queue.shape[1] != queries.shape[1]:
        raise ValueError(
            f"moco_info_nce expects a (K, {queries.shape[1]}) queue of keys, got "
            f"{tuple(queue.shape)}."
        )
    if queries.shape[0] == 0:
        raise ValueError("moco_info_nce needs at least one query, got an empty batch.")
    if not temperature > 0:
        raise ValueError(f"moco_info_nce temperature must be > 0, got {temperature}.")
    q = F.normalize(queries, dim=1)
    k = F.normalize(keys, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negative = q @ queue.to(q.dtype).T
    logits = torch.cat([positive, negative], dim=1) / temperature
    targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, targets)


def moco_v3_info_nce(
    queries: Tensor, keys: Tensor, temperature: float, *, gather_distributed: bool = True
) -> Tensor:
    """MoCo v3's InfoNCE of N queries against the keys of the same batch, scaled by 2 * T.

    Let q_i and k_i be the L2-normalised rows of `queries` and `keys` (two views of sample i)
    and s_ij = q_i . k_j / temperature. Then

        loss = 2 * temperature * 1/N * sum_i  -log( exp(s_ii) / sum_j exp(s_ij) )

    an N-way cross-entropy that picks each query's own key out of the batch's keys; the factor
    2 * temperature is MoCo v3's (it keeps the gradient's size independent of the temperature).
    No queue: the other keys of the batch are the negatives.

    Under data-parallel training with `gather_distributed=True`, the keys are gathered from
    every process in rank order (without gradient: MoCo computes keys with the momentum
    encoder) and process r's query i is matched with global key r * N + i. The mean of the
    processes' losses then equals the loss of one process holding the global batch, and under
    DDP's gradient averaging so does the update. All processes must pass batches of one size.

    Args:
        queries: (N, D) query embeddings (from the encoder being trained).
        keys: (N, D) key embeddings, row i the positive of queries[i]; no gradient flows
            into them.
        temperature: positive softmax temperature (0.2 in MoCo v3 for ResNets, 0.2 for ViTs).
        gather_distributed: use the keys of every process as negatives.

    Returns:
        The scalar loss.
    """
    if queries.ndim != 2 or queries.shape != keys.shape:
        raise ValueError(
            "moco_v3_info_nce expects queries and keys of the same 2-D shape (batch, dim), got "
            f"{tuple(queries.shape)} and {tuple(keys.shape)}."
        )
    if queries.shape[0] == 0:
        raise ValueError("moco_v3_info_nce needs at least one query, got an empty batch.")
    if not temperature > 0:
        raise ValueError(f"moco_v3_info_nce temperature must be > 0, got {temperature}.")
    q = F.normalize(queries, dim=1)
    k = F.normalize(keys.detach(), dim=1)
    offset = 0
    if gather_distributed and is_distributed():
        offset = rank() * q.shape[0]
        k = concat_all_gather(k.contiguous())
    logits = q @ k.T / temperature
    targets = torch.arange(q.shape[0], device=q.device) + offset
    return 2 * temperature * F.cross_entropy(logits, targets)
