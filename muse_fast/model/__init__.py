"""MUSE networks: encoders, decoder, heads, the model registry and checkpoint loading."""

from .backbone import BackboneOutput, MuseBackbone
from .checkpoint import load_official_checkpoint
from .registry import MODELS, DenseOutputs, MuseNet, create_backbone, create_model

__all__ = [
    "MODELS",
    "BackboneOutput",
    "DenseOutputs",
    "MuseBackbone",
    "MuseNet",
    "create_backbone",
    "create_model",
    "load_official_checkpoint",
]
