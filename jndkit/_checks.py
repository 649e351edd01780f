"""One validation module: shape and range checks raising :class:`InputError`
with the actual and expected values (never ``assert``: ``python -O`` removes it)."""

from __future__ import annotations

import torch

from .errors import InputError


def check_image_batch(x: torch.Tensor, name: str = "x") -> None:
    """Check ``x`` is a float tensor of shape ``[B,3,H,W]`` with values in [0,1]."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"{name} must have shape [B,3,H,W], got {list(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating tensor in [0,1], got dtype {x.dtype}")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise InputError(
            f"{name} must lie in [0,1], got range [{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("a", "b")) -> None:
    if a.shape != b.shape:
        raise InputError(f"{names[0]} and {names[1]} must have the same shape, got {list(a.shape)} and {list(b.shape)}")


def check_positive(value: float, name: str) -> None:
    if not value > 0:
        raise InputError(f"{name} must be > 0, got {value}")
