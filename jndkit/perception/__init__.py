"""Human side of perception: JND threshold maps and colour difference.

Pure functions ``image -> threshold map`` on batched tensors ``[B,3,H,W]`` in [0,1]; thresholds
are in [0,1] units (grey levels / 255). See :mod:`jndkit.perception.jnd` (Chou & Li, Yang NAMM,
Wu pattern complexity) and :mod:`jndkit.perception.color` (Lab, CIEDE2000, colour variance).
"""

from .color import ciede2000, colour_variance, colour_variance_bound, rgb_to_lab
from .jnd import (
    JND_MODELS,
    background_luminance,
    chou_li,
    contrast_masking,
    jnd_map,
    luma,
    luminance_adaptation,
    max_gradient,
    namm,
    rgb_box_from_ycbcr,
    wu_pattern,
)

__all__ = [
    "JND_MODELS",
    "background_luminance",
    "chou_li",
    "ciede2000",
    "colour_variance",
    "colour_variance_bound",
    "contrast_masking",
    "jnd_map",
    "luma",
    "luminance_adaptation",
    "max_gradient",
    "namm",
    "rgb_box_from_ycbcr",
    "rgb_to_lab",
    "wu_pattern",
]
