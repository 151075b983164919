"""Encoders that map images to features, and the heads methods put on top of them."""

from sslkit.models.backbones import Backbone, ConvNet, ResNet

__all__ = ["Backbone", "ConvNet", "ResNet"]
