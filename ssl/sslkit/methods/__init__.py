"""Pretraining methods: one small LightningModule per method on top of ``SSLMethod``."""

from sslkit.methods.base import NonFiniteLossError, SSLMethod
from sslkit.methods.byol import BYOL
from sslkit.methods.inpainting import MaskedInpainting
from sslkit.methods.simclr import SimCLR

__all__ = ["BYOL", "MaskedInpainting", "NonFiniteLossError", "SSLMethod", "SimCLR"]
