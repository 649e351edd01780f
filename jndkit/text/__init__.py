"""Text that people read and OCR cannot (issue 15 part 2).

* :mod:`.ocr`: easyocr (the attacked engine, offline weights) and Tesseract (the independent judge),
  run as their users run them; CER.
* :mod:`.victim`: easyocr's recogniser (and optionally CRAFT) on the clean text boxes, differentiable.
* :mod:`.goals`: ``unreadable`` and ``redact:REGEX`` (registered for ``task="text"``).
* :mod:`.protect`: attack one image with the engine, judge a protected image from scratch.
* :mod:`.samples`: rendered images with fictitious private text.
* :mod:`.task`: the pipeline task (:class:`~jndkit.text.task.TextTask`).

Importing this package registers the text goals; easyocr is imported only when a reader is loaded.
"""

from .goals import DEFAULT_TEXT_KAPPA, UNREADABLE_CER, TextGoalSpec, Unreadable
from .ocr import Word, cer, load_reader, read_easyocr, read_tesseract, region_reading
from .protect import DEFAULT_SUITE, Region, TextAttack, TextVerdict, attack_text, find_regions, judge_text
from .victim import TextVictim, decode_greedy

__all__ = [
    "DEFAULT_SUITE",
    "DEFAULT_TEXT_KAPPA",
    "UNREADABLE_CER",
    "Region",
    "TextAttack",
    "TextGoalSpec",
    "TextVerdict",
    "TextVictim",
    "Unreadable",
    "Word",
    "attack_text",
    "cer",
    "decode_greedy",
    "find_regions",
    "judge_text",
    "load_reader",
    "read_easyocr",
    "read_tesseract",
    "region_reading",
]
