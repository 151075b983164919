"""Encoders that map images to features, and the heads methods put on top of them."""

from sslkit.models.backbones import Backbone, ConvNet, ResNet
from sslkit.models.decoder import ConvDecoder
from sslkit.models.ema import ema_update, make_teacher, momentum_schedule

__all__ = [
    "Backbone",
    "ConvDecoder",
    "ConvNet",
    "ResNet",
    "ema_update",
    "make_teacher",
    "momentum_schedule",
]
