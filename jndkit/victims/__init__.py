"""Victims: the models jndkit fools. Each owns its preprocessing as differentiable
torch ops, so attacks only ever see [0,1] RGB pixels at the photo's own size."""

from .classifier import ClassifierVictim
from .panel import PANELS, PanelVictim, is_panel, load_panel, panel_members
from .zoo import MODELS, ModelInfo, available_models, imagenet_labels, load_victim

__all__ = ["ClassifierVictim", "MODELS", "ModelInfo", "PANELS", "PanelVictim", "available_models", "imagenet_labels",
           "is_panel", "load_panel", "load_victim", "panel_members"]
