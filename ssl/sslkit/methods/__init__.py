"""Pretraining methods: one small LightningModule per method on top of ``SSLMethod``."""

from sslkit.methods.base import NonFiniteLossError, SSLMethod
from sslkit.methods.byol import BYOL
from sslkit.methods.simclr import SimCLR

__all__ = ["BYOL", "NonFiniteLossError", "SSLMethod", "SimCLR"]
