"""Pretraining methods: one small LightningModule per method on top of ``SSLMethod``."""

from sslkit.methods.base import NonFiniteLossError, SSLMethod
from sslkit.methods.byol import BYOL
from sslkit.methods.inpainting import MaskedInpainting
from sslkit.methods.mocov2 import MoCoV2
from sslkit.methods.nnclr import NNCLR
from sslkit.methods.pairwise import PairwiseContrastive
from sslkit.methods.simclr import SimCLR
from sslkit.methods.simsiam import SimSiam
from sslkit.methods.supervised import Supervised
from sslkit.methods.triplet import Triplet

__all__ = [
    "BYOL",
    "MaskedInpainting",
    "MoCoV2",
    "NNCLR",
    "NonFiniteLossError",
    "PairwiseContrastive",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "Supervised",
    "Triplet",
]
