"""Process-group helpers that also work when training runs in a single process.

Contrastive losses get better with more negatives, so under data-parallel training they
compare local anchors against the embeddings of every process. These helpers give the
process layout and an all-gather that keeps the autograd graph, and fall back to the
single-process answer when `torch.distributed` is unavailable or not initialised.
"""

import torch
from lightly.utils.dist import gather as _lightly_gather
from lightly.utils.dist import rank, world_size

__all__ = ["gather_with_grad", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """True when a process group is initialised and holds more than one process."""
    return world_size() > 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather `tensor` from every process, concatenated along dim 0 in rank order.

    Unlike `torch.distributed.all_gather`, the result stays in the autograd graph: the
    gradient that reaches this process's `tensor` is the sum, over all processes, of the
    gradients flowing into its slice of their gathered copies. With DDP, which averages
    gradients over processes, this makes the update that of the mean of the per-process
    losses, i.e. the same as one process computing the loss on the global batch.

    Every process must call this with a tensor of the same shape and dtype (a collective
    operation). Without a multi-process group the tensor is returned unchanged.
    """
    if not is_distributed():
        return tensor
    return torch.cat(_lightly_gather(tensor.contiguous()), dim=0)
