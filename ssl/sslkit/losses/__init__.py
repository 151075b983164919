"""Self-supervised losses: pure functions on embedding tensors.

Each loss states its formula in its docstring and knows nothing of Lightning, configs or
devices, so methods can share them and tests can check them against references.
"""

from sslkit.losses.byol import byol_loss
from sslkit.losses.info_nce import info_nce
from sslkit.losses.masked_mse import masked_mse
from sslkit.losses.mining import MINING, mine_triplets, pairs_from_triplets
from sslkit.losses.pairwise import pairwise_contrastive
from sslkit.losses.triplet import triplet

__all__ = [
    "MINING",
    "byol_loss",
    "info_nce",
    "masked_mse",
    "mine_triplets",
    "pairs_from_triplets",
    "pairwise_contrastive",
    "triplet",
]
