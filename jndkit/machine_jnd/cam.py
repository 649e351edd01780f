"""Class activation maps (CAM) for the classifiers of seed 003 (Jin et al., DMV-JND).

The paper feeds the DMV-JND-NET with the image stacked with a *merged CAM map*
``c`` (eq. 2) and uses ``c`` again in the magnitude and spatial losses
(eq. 10-15). This module computes it.

* :func:`cam` -- the original CAM of Zhou et al. (2016) for classifiers that end
  in global average pooling + one linear layer. With last feature maps
  ``f_k(u,v)`` ``[K,h,w]`` and linear weights ``W[class, k]``::

      M(u,v) = sum_k W[l, k] * f_k(u,v)            # l = the predicted class
      c      = normalise(ReLU(upsample(M, (H,W))))  # normalise: divide by the max

  The four offline victims (MobileNetV2, EfficientNet-Lite0/1/2) have a
  feature/linear accessor in :func:`gap_linear_head`; so does any torchvision
  ResNet/MobileNet/EfficientNet-style model found by duck typing.
* :func:`grad_cam` -- Grad-CAM (Selvaraju et al. 2017) through forward/backward
  hooks on a chosen layer, the fallback for every other model. For a GAP+linear
  model it gives the same map as :func:`cam` (the Grad-CAM weights are
  ``W[l,k]/(h*w)``; the constant disappears in the normalisation).
* :func:`merged_cam` -- eq. 2, ``c = (1/N) sum_n c_n``, renormalised to [0,1].

Every map is ``[B,1,H,W]`` in [0,1] at the size of the input photo ``x``.
CAMs are references, not part of the optimised graph: they are computed
without gradient and returned detached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

Features = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GapLinearHead:
    """How to read a GAP + linear classifier.

    Attributes:
        features: normalised model input ``[B,3,h0,w0]`` -> last feature maps ``[B,K,h,w]``.
        linear: the final ``nn.Linear`` (``weight [classes, K]``), applied after global
            average pooling (dropout is the identity at eval time).
    """

    features: Features
    linear: nn.Linear


def _inner_model(victim: nn.Module) -> nn.Module:
    return victim.model if isinstance(getattr(victim, "model", None), nn.Module) else victim


def _preprocess(victim: nn.Module, x: torch.Tensor) -> torch.Tensor:
    pre = getattr(victim, "preprocess", None)
    return pre(x) if callable(pre) else x


def gap_linear_head(victim: nn.Module) -> GapLinearHead | None:
    """The feature/linear accessor of a GAP+linear classifier, or ``None`` if unknown.

    Known layouts (``victim`` may be a :class:`~jndkit.victims.ClassifierVictim` or a bare model):

    * torchvision MobileNetV2 / EfficientNet: ``.features`` then
      adaptive average pooling then ``.classifier`` whose last ``nn.Linear`` is the head
      (MobileNetV2: ``classifier = [Dropout, Linear]``);
    * EfficientNet-Lite (``efficientnet_lite_pytorch``): ``extract_features(x)`` then
      ``_avg_pooling``, ``_dropout``, ``_fc``;
    * torchvision ResNet-style: ``conv1 ... layer4`` then ``avgpool`` then ``fc``;
    * torchvision DenseNet: ``features`` then ReLU then pooling then ``classifier``;
    * a bare model exposing ``features`` (module) and ``fc``/``classifier`` (``nn.Linear``).

    MobileNetV2's features end in ReLU6, the others in swish/ReLU, so the map
    is exactly the CAM of Zhou et al.; a model whose classifier has hidden layers
    (VGG, AlexNet, MobileNetV3) is not GAP+linear and gets ``None`` (use :func:`grad_cam`).
    """
    model = _inner_model(victim)
    # EfficientNet-Lite (and lukemelas EfficientNet): extract_features + _fc.
    if callable(getattr(model, "extract_features", None)) and isinstance(getattr(model, "_fc", None), nn.Linear):
        if getattr(getattr(model, "_global_params", None), "local_pooling", False):
            return None
        return GapLinearHead(model.extract_features, model._fc)
    feats = getattr(model, "features", None)
    head = getattr(model, "classifier", None)
    if type(model).__name__ == "DenseNet" and isinstance(feats, nn.Module) and isinstance(head, nn.Linear):
        return GapLinearHead(nn.Sequential(feats, nn.ReLU()), head)
    if isinstance(feats, nn.Module):
        if isinstance(head, nn.Linear):
            return GapLinearHead(feats, head)
        if isinstance(head, nn.Sequential):
            layers = [m for m in head if not isinstance(m, nn.Dropout)]
            if len(layers) == 1 and isinstance(layers[0], nn.Linear):
                return GapLinearHead(feats, layers[0])
        if isinstance(getattr(model, "fc", None), nn.Linear):
            return GapLinearHead(feats, model.fc)
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    if all(isinstance(getattr(model, n, None), nn.Module) for n in names) and isinstance(
        getattr(model, "fc", None), nn.Linear
    ):
        trunk = nn.Sequential(*[getattr(model, n) for n in names])
        return GapLinearHead(trunk, model.fc)
    return None


def normalise_map(m: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each map of ``m`` ``[B,1,H,W]`` (non-negative) by its maximum; all-zero maps stay 0."""
    top = m.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    return torch.where(top > eps, m / top.clamp_min(eps), torch.zeros_like(m))


def _finish(weighted: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B,h,w]`` class-weighted feature sum -> upsample to ``size``, ReLU, normalise: ``[B,1,H,W]``."""
    m = F.interpolate(weighted.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
    return normalise_map(F.relu(m))


def _check_x(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"x must have shape [B,3,H,W], got {shape}")


def cam_and_logits(
    victim: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None, layer: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CAM ``[B,1,H,W]`` and logits ``[B,classes]`` of ``victim`` on ``x`` in one forward pass.

    Args:
        victim: a classifier on [0,1] pixels (``ClassifierVictim`` or any module with an
            optional ``preprocess``); GAP+linear models use the closed-form CAM, others
            Grad-CAM on ``layer`` (default: the last ``nn.Conv2d``).
        x: ``[B,3,H,W]`` photos in [0,1].
        labels: ``[B]`` classes to explain; default the predicted class (``argmax`` of the logits).
        layer: force Grad-CAM on this layer.

    Returns:
        ``(c, logits)``; ``c`` is detached, ``logits`` come from the same forward
        (so the predicted label and its CAM always agree).
    """
    _check_x(x)
    head = gap_linear_head(victim) if layer is None else None
    if head is None:
        return grad_cam_and_logits(victim, x, layer=layer, labels=labels)
    with torch.no_grad():
        f = head.features(_preprocess(victim, x))  # [B,K,h,w]
        logits = head.linear(f.mean(dim=(2, 3)))
        lab = logits.argmax(dim=1) if labels is None else labels.to(logits.device).long()
        w = head.linear.weight[lab]  # [B,K]
        weighted = torch.einsum("bk,bkhw->bhw", w.to(f.dtype), f)
        return _finish(weighted, (x.shape[2], x.shape[3])), logits


def cam(victim: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Class activation map ``[B,1,H,W]`` in [0,1] of ``victim`` for ``labels`` (default: predicted).

    GAP+linear classifiers (see :func:`gap_linear_head`) get the original CAM,
    ``normalise(ReLU(upsample(sum_k W[l,k] f_k)))``; any other model gets :func:`grad_cam`.
    """
    return cam_and_logits(victim, x, labels)[0]


def _last_conv(model: nn.Module) -> nn.Module:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            last = m
    if last is None:
        raise InputError("Grad-CAM needs a convolutional layer; the model has no nn.Conv2d (pass layer=...)")
    return last


def grad_cam_and_logits(
    victim: nn.Module, x: torch.Tensor, layer: nn.Module | None = None, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM ``[B,1,H,W]`` and logits ``[B,classes]`` (see :func:`grad_cam`)."""
    _check_x(x)
    target = layer if layer is not None else _last_conv(_inner_model(victim))
    store: dict[str, torch.Tensor] = {}

    def keep(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor):
            raise InputError(f"Grad-CAM layer {type(_m).__name__} must output one tensor")
        out.retain_grad()
        store["a"] = out

    handle = target.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            xin = x.detach().requires_grad_(True)  # makes the graph reach the hooked layer
            logits = victim(xin)
            if "a" not in store:
                raise InputError(f"Grad-CAM layer {type(target).__name__} was not used in the forward pass")
            lab = logits.argmax(dim=1) if labels is None else labels.to(logits.device).long()
            score = logits.gather(1, lab.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, store["a"])
    finally:
        handle.remove()
    a = store["a"].detach()
    if a.ndim != 4:
        raise InputError(f"Grad-CAM layer must output [B,K,h,w] maps, got {list(a.shape)}")
    alpha = grad.mean(dim=(2, 3))  # [B,K]: Grad-CAM neuron importance weights
    weighted = torch.einsum("bk,bkhw->bhw", alpha, a)
    return _finish(weighted, (x.shape[2], x.shape[3])), logits.detach()


def grad_cam(
    victim: nn.Module, x: torch.Tensor, layer: nn.Module | None = None, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Grad-CAM ``[B,1,H,W]`` in [0,1]: ``normalise(ReLU(upsample(sum_k alpha_k A_k)))``.

    ``A`` ``[B,K,h,w]`` is the output of ``layer`` (default: the model's last ``nn.Conv2d``),
    ``alpha_k = mean_{u,v} d y_l / d A_k(u,v)`` with ``y_l`` the logit of ``labels``
    (default: the predicted class). Model weights receive no gradient.
    """
    return grad_cam_and_logits(victim, x, layer, labels)[0]


def merged_cam_and_logits(
    victims: Sequence[nn.Module], x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Merged CAM ``[B,1,H,W]`` (eq. 2) plus each victim's clean logits ``[B,classes]``."""
    if len(victims) == 0:
        raise InputError("need at least one classifier for the merged CAM")
    maps, logits = [], []
    for v in victims:
        c, z = cam_and_logits(v, x)
        maps.append(c)
        logits.append(z)
    merged = torch.stack(maps).mean(dim=0)  # eq. 2: c = (1/N) sum_n c_n
    return normalise_map(merged), logits


def merged_cam(victims: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Eq. 2: ``c = (1/N) sum_n c_n`` over the classifiers' CAMs for their own predicted class,
    divided by its maximum so it spans [0,1]. Returns ``[B,1,H,W]``, detached."""
    return merged_cam_and_logits(victims, x)[0]
