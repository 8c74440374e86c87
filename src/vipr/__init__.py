"""vipr: visual pre-training — self-supervised backbones, architecture search, transfer and serving."""

__version__ = "0.1.0"
