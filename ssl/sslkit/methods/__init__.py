"""Pretraining methods: one small LightningModule per method on top of ``SSLMethod``."""

from sslkit.methods.base import NonFiniteLossError, SSLMethod
from sslkit.methods.byol import BYOL
from sslkit.methods.inpainting import MaskedInpainting
from sslkit.methods.pairwise import PairwiseContrastive
from sslkit.methods.simclr import SimCLR
from sslkit.methods.supervised import Supervised
from sslkit.methods.triplet import Triplet

__all__ = [
    "BYOL",
    "MaskedInpainting",
    "NonFiniteLossError",
    "PairwiseContrastive",
    "SSLMethod",
    "SimCLR",
    "Supervised",
    "Triplet",
]
