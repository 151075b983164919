"""sslkit: self-supervised pretraining of image encoders and their evaluation."""

__version__ = "0.1.0"
