"""Object detection: an offline SSD-MobileNetV2 (COCO) in PyTorch, goals that hide objects from it,
the attack and the from-scratch judge, and the pipeline task (``jndkit protect --task detect``).

Modules: :mod:`.graphdef` (TensorFlow GraphDef without TensorFlow), :mod:`.ssd` (the port),
:mod:`.labels` (COCO names), :mod:`.goals` (victim, ``vanish``, ``vanish-all``, ``mislabel``),
:mod:`.protect` (:class:`DetectProtector`), :mod:`.task` (:class:`DetectTask`), :mod:`.draw`.
"""

from __future__ import annotations

from .draw import draw_boxes
from .goals import DetectorVictim, Mislabel, Vanish, parse_detect_goal
from .labels import COCO_NAMES, coco_index
from .protect import DetectConfig, DetectProtector, DetectVerdict
from .ssd import Detection, SSDMobileNetV2, load_ssd

__all__ = [
    "COCO_NAMES",
    "DetectConfig",
    "DetectProtector",
    "DetectVerdict",
    "Detection",
    "DetectorVictim",
    "Mislabel",
    "SSDMobileNetV2",
    "Vanish",
    "coco_index",
    "draw_boxes",
    "load_ssd",
    "parse_detect_goal",
]
