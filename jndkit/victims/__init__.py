"""Victims: the models jndkit fools. Each owns its preprocessing as differentiable
torch ops, so attacks only ever see [0,1] RGB pixels at the photo's own size."""

from .classifier import ClassifierVictim
from .zoo import MODELS, ModelInfo, available_models, imagenet_labels, load_victim

__all__ = ["ClassifierVictim", "MODELS", "ModelInfo", "available_models", "imagenet_labels", "load_victim"]
