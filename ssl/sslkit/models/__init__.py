"""Encoders that map images, volumes and clips to features, and the heads methods put on top of them."""

from sslkit.models.backbones import Backbone, ConvNet, ConvNet3d, ResNet, VideoResNet
from sslkit.models.decoder import ConvDecoder
from sslkit.models.ema import EMATeacher, ema_update, make_teacher, momentum_schedule

__all__ = [
    "Backbone",
    "ConvDecoder",
    "ConvNet",
    "ConvNet3d",
    "EMATeacher",
    "ResNet",
    "VideoResNet",
    "ema_update",
    "make_teacher",
    "momentum_schedule",
]
