"""COCO class names by the 91 class ids of the TensorFlow object detection API's COCO models.

Id 0 is the background; the ten ids COCO named but never annotated (12 street sign, 26 hat, 29 shoe,
30 eye glasses, 45 plate, 66 mirror, 68 window, 69 desk, 71 door, 83 blender) keep their names from
the COCO paper: the model has a score for them, trained only as negatives.
"""

from __future__ import annotations

from ..errors import InputError

COCO_NAMES: tuple[str, ...] = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe",
    "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "plate",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror",
    "dining table", "window", "desk", "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
"""``COCO_NAMES[i]`` is the name of class id ``i`` (91 entries)."""


def coco_index(name: str | int) -> int:
    """The class id of a COCO class name (case-blind; ``_`` or ``-`` for spaces) or id.

    >>> coco_index("person"), coco_index("Cell_Phone"), coco_index(47)
    (1, 77, 47)

    Raises:
        InputError: an unknown name (with close names) or an id out of 1..90.
    """
    if isinstance(name, int) or (isinstance(name, str) and name.strip().isdigit()):
        i = int(name)
        if not 1 <= i < len(COCO_NAMES):
            raise InputError(f"COCO class id {i} is out of range 1..{len(COCO_NAMES) - 1}")
        return i
    key = name.strip().lower().replace("_", " ").replace("-", " ")
    if key in COCO_NAMES[1:]:
        return COCO_NAMES.index(key)
    import difflib

    close = difflib.get_close_matches(key, COCO_NAMES[1:], n=3)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    raise InputError(f"unknown COCO class {name!r}{hint}")
