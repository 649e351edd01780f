"""easyocr's recogniser (and optionally its CRAFT detector) as a differentiable victim.

:class:`TextVictim` maps an image batch ``[B,3,H,W]`` in [0,1] to the English recogniser's
per-frame logits on the **clean** text boxes, the way easyocr reads a box on the CPU
(``easyocr.utils.get_image_list`` + ``easyocr.recognition.get_text``):

1. grey as OpenCV's ``COLOR_RGB2GRAY`` (``0.299 R + 0.587 G + 0.114 B``), on the 0-255 scale;
2. the box's crop resized to height 64 and width ``int(64 * w / h)`` with OpenCV's bilinear rule
   (half-pixel centres, edge values repeated): here ``grid_sample`` on the whole image with the
   sampling positions clamped to the box, so the resize is differentiable and runs at any input size
   (a x0.75 upload samples the same box, scaled);
3. ``(v / 255 - 0.5) / 0.5``, padded on the right with the last column to ``ceil(w/h) * 64``;
4. the recogniser (VGG + 2 BiLSTM + linear, CTC over 97 classes, class 0 the blank), with the classes
   easyocr ignores for English pushed to -1e4 (easyocr zeroes their probability before decoding).

Differences from easyocr, all below one 8-bit level or outside the gradient: easyocr rounds the grey
image and the resized crop to uint8, and re-reads a box whose confidence is below 0.1 with a
contrast stretch (the from-scratch judge, :func:`jndkit.text.ocr.read_easyocr`, does all of it).

Outputs ``[B, R, T, C]`` (regions x jittered boxes flattened into ``R``; frames padded with a sure
blank to the longest region's ``T``), plus optionally one more frame row summarising CRAFT's
region score inside the box (``detector=True``, see :meth:`TextVictim._detector_row`): easyocr keeps a
text component only when its largest region score reaches ``text_threshold`` (0.7), so a box whose
peak stays below it is not detected, and its text is not read at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

__all__ = ["LOW_TEXT", "MODEL_HEIGHT", "TEXT_THRESHOLD", "TextVictim", "decode_greedy", "jitter_boxes"]

MODEL_HEIGHT = 64
"""Height of a crop as the English recogniser (``english_g2``) reads it."""

_GREY = (0.299, 0.587, 0.114)
_IGNORED = -1e4
_PAD_BLANK = 20.0  # logit of the blank on padding frames (others 0): decodes to nothing
LOW_TEXT = 0.4
"""easyocr's ``low_text``: CRAFT region scores above it form the text components."""
TEXT_THRESHOLD = 0.7
"""easyocr's ``text_threshold``: a component is a text box only if its largest region score reaches it."""
_CRAFT_MEAN = (0.485, 0.456, 0.406)
_CRAFT_STD = (0.229, 0.224, 0.225)

Box = tuple[float, float, float, float]
"""``(x_min, x_max, y_min, y_max)`` in pixels of the clean photo."""


def jitter_boxes(box: Box, n: int, width: int, height: int, step: float = 0.05) -> list[Box]:
    """``box`` and up to ``n`` variants of it as a re-detection might draw it: grown, shrunk and
    shifted by ``step`` of its height (CRAFT's boxes of a perturbed image move by a few pixels), clipped
    to the photo. Deterministic."""
    x0, x1, y0, y1 = box
    d = step * (y1 - y0)
    variants = [(x0 - d, x1 + d, y0 - d, y1 + d), (x0 + d, x1 - d, y0 + d, y1 - d),
                (x0 + d, x1 + d, y0, y1), (x0 - d, x1 - d, y0, y1)]
    out = [box]
    for v in variants[:max(0, n)]:
        a, b, c, e = max(0.0, v[0]), min(float(width), v[1]), max(0.0, v[2]), min(float(height), v[3])
        if b - a >= 2 and e - c >= 2:
            out.append((a, b, c, e))
    return out


def decode_greedy(logits: torch.Tensor, characters: str) -> list[str]:
    """easyocr's greedy CTC decoding of ``[N,T,C]`` logits: best class per frame, repeats merged,
    blanks (class 0) dropped; class ``k >= 1`` is ``characters[k-1]``."""
    best = logits.argmax(dim=-1).tolist()
    texts = []
    for seq in best:
        prev = -1
        chars = []
        for k in seq:
            if k != prev and k != 0:
                chars.append(characters[k - 1])
            prev = k
        texts.append("".join(chars))
    return texts


class TextVictim(nn.Module):
    """easyocr's English recogniser on fixed text boxes (and optionally CRAFT), differentiable.

    Args:
        reader: an easyocr ``Reader`` (:func:`jndkit.text.ocr.load_reader`).
        boxes: the clean text boxes ``(x_min, x_max, y_min, y_max)`` in pixels of the clean photo.
        size: ``(H, W)`` of the clean photo; inputs of another size (an upload's resize) are read at
            the same boxes, scaled.
        jitter: extra boxes per region (:func:`jitter_boxes`) the victim also reads, so the attack
            holds when a re-detection draws the box a few pixels off.
        detector: also run CRAFT (easyocr's text detector) and append, per box, a summary of its
            region score inside the box (:meth:`_detector_row`).
        craft_context: pixels of context around the boxes CRAFT is run on (``None``: the whole input).
        det_pad: pixels the boxes are grown by when CRAFT's score is summarised in them.

    Attributes:
        groups: ``long[R]`` the region of each output row (``R`` = regions x boxes).
        lengths: ``long[R]`` frames of each row before padding.
        characters: the recogniser's characters (class ``k >= 1`` is ``characters[k-1]``).
    """

    per_sample = False

    def __init__(self, reader: Any, boxes: Sequence[Box], size: tuple[int, int], jitter: int = 0,
                 detector: bool = False, craft_context: int | None = 48, det_pad: float = 4.0) -> None:
        super().__init__()
        if not boxes:
            raise InputError("a text victim needs at least one text box")
        self.recognizer = reader.recognizer
        self.craft = reader.detector if detector else None
        self.detector = bool(detector)
        self.craft_context = craft_context
        self.det_pad = float(det_pad)
        self.characters: str = reader.character
        self.height, self.width = int(size[0]), int(size[1])
        ignored = set(reader.character) - set(reader.lang_char)
        mask = torch.zeros(len(reader.character) + 1, dtype=torch.bool)
        for c in ignored:
            mask[reader.character.index(c) + 1] = True
        self.register_buffer("ignored", mask, persistent=False)
        rows: list[Box] = []
        groups: list[int] = []
        for i, b in enumerate(boxes):
            x0, x1, y0, y1 = (float(v) for v in b)
            if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
                raise InputError(f"text box {b} lies outside the {self.width}x{self.height} photo")
            for v in jitter_boxes((x0, x1, y0, y1), jitter, self.width, self.height):
                rows.append(v)
                groups.append(i)
        self.boxes = rows
        self.groups = torch.tensor(groups, dtype=torch.long)
        self.n_regions = len(boxes)
        # width of each crop after easyocr's resize, and of the padded recogniser input
        self.crop_w = [max(1, int(MODEL_HEIGHT * _ratio(b))) for b in rows]
        self.pad_w = [math.ceil(max(_ratio(b), 1.0)) * MODEL_HEIGHT for b in rows]
        with torch.no_grad():
            t = [self._recognise(torch.zeros(1, 1, MODEL_HEIGHT, w)).shape[1] for w in sorted(set(self.pad_w))]
        lens = dict(zip(sorted(set(self.pad_w)), t, strict=True))
        self.lengths = torch.tensor([lens[w] for w in self.pad_w], dtype=torch.long)

    # -- pieces ----------------------------------------------------------------------------------
    def _recognise(self, x: torch.Tensor) -> torch.Tensor:
        """Recogniser logits ``[N,T,C]`` of normalised grey inputs ``[N,1,64,W]``, ignored classes at -1e4."""
        z: torch.Tensor = self.recognizer(x, None)
        ignored: torch.Tensor = self.ignored  # type: ignore[assignment]
        return z.masked_fill(ignored.to(z.device), _IGNORED)

    def _crop(self, grey: torch.Tensor, box: Box, w_out: int) -> torch.Tensor:
        """Bilinear resize (OpenCV's rule, edges repeated) of ``box`` of ``grey`` ``[B,1,h,w]`` to
        ``[B,1,64,w_out]``; ``box`` is in clean-photo pixels and scaled to the input's size."""
        b, _, h, w = grey.shape
        sx, sy = w / self.width, h / self.height
        x0, x1, y0, y1 = box[0] * sx, box[1] * sx, box[2] * sy, box[3] * sy
        # easyocr crops whole pixels [x0, x1): centres x0 .. x1-1
        xa, xb = math.floor(x0 + 0.5), max(math.floor(x0 + 0.5) + 1, math.floor(x1 + 0.5))
        ya, yb = math.floor(y0 + 0.5), max(math.floor(y0 + 0.5) + 1, math.floor(y1 + 0.5))
        dev, dt = grey.device, grey.dtype
        j = torch.arange(w_out, device=dev, dtype=dt)
        i = torch.arange(MODEL_HEIGHT, device=dev, dtype=dt)
        px = (xa + (j + 0.5) * ((xb - xa) / w_out) - 0.5).clamp(xa, xb - 1)
        py = (ya + (i + 0.5) * ((yb - ya) / MODEL_HEIGHT) - 0.5).clamp(ya, yb - 1)
        gx = (2 * px + 1) / w - 1
        gy = (2 * py + 1) / h - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
        return F.grid_sample(grey, grid[None].expand(b, -1, -1, -1), mode="bilinear", align_corners=False)

    def craft_scores(self, x: torch.Tensor) -> torch.Tensor:
        """CRAFT's region score map ``[B,H',W']`` (half the padded input size) of ``x`` ``[B,3,H,W]``."""
        if self.craft is None:
            raise InputError("this text victim was built without the detector (detector=True)")
        mean = torch.tensor(_CRAFT_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(_CRAFT_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        h, w = x.shape[-2:]
        xp = F.pad(x, (0, (-w) % 32, 0, (-h) % 32))  # easyocr pads the canvas with black, then normalises
        y, _ = self.craft((xp - mean) / std)
        score: torch.Tensor = y[..., 0]
        return score

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B,3,H,W]`` in [0,1] -> logits ``[B,R,T,C]`` (``+1`` frame row with ``detector``:
        CRAFT's region score in the box, :meth:`_detector_row`)."""
        if x.ndim != 4 or x.shape[1] != 3:  # no range check: stand-ins may overshoot [0,1] by rounding
            raise InputError(f"a text victim reads images [B,3,H,W], got {list(x.shape)}")
        grey = (x[:, 0:1] * _GREY[0] + x[:, 1:2] * _GREY[1] + x[:, 2:3] * _GREY[2])
        norm = grey * 2.0 - 1.0  # (v/255 - 0.5)/0.5 on the 0-255 scale
        t_max = int(self.lengths.max())
        rows = []
        for box, cw, pw in zip(self.boxes, self.crop_w, self.pad_w, strict=True):
            crop = self._crop(norm, box, cw)
            if pw > cw:
                crop = torch.cat([crop, crop[..., -1:].expand(-1, -1, -1, pw - cw)], dim=-1)
            elif pw < cw:
                crop = crop[..., :pw]
            z = self._recognise(crop)
            if z.shape[1] < t_max:
                pad = torch.zeros(z.shape[0], t_max - z.shape[1], z.shape[2], device=z.device, dtype=z.dtype)
                pad[..., 0] = _PAD_BLANK
                z = torch.cat([z, pad], dim=1)
            rows.append(z)
        out = torch.stack(rows, dim=1)  # [B,R,T,C]
        if self.detector:
            out = torch.cat([out, self._detector_row(x, out.shape[3])], dim=2)
        return out

    def _detector_row(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """``[B,R,1,n]``: per box, CRAFT's region score summarised inside the box grown by
        :attr:`det_pad` pixels: entry 0 its maximum, entry 1 the mean of ``relu(score - LOW_TEXT)``,
        entry 2 the mean of ``relu(score - TEXT_THRESHOLD)`` (the rest 0).

        CRAFT runs on the part of the input that holds every box plus :attr:`craft_context` pixels
        of context (its receptive field matters only that far; measured in docs/text.md), padded
        with black to a multiple of 32 as easyocr pads its canvas, so a small text box on a large
        photo costs what its surroundings cost."""
        b = x.shape[0]
        h, w = x.shape[-2:]
        sx, sy = w / self.width, h / self.height
        c = self.craft_context
        xs = [v * sx for bx in self.boxes for v in bx[:2]]
        ys = [v * sy for bx in self.boxes for v in bx[2:]]
        if c is None:
            ox, oy, ex, ey = 0, 0, w, h
        else:  # even offsets: the map (half the input's scale) stays on easyocr's grid
            ox = max(0, int(min(xs) - c * sx)) // 2 * 2
            oy = max(0, int(min(ys) - c * sy)) // 2 * 2
            ex, ey = min(w, math.ceil(max(xs) + c * sx)), min(h, math.ceil(max(ys) + c * sy))
        score = self.craft_scores(x[..., oy:ey, ox:ex])
        det = torch.zeros(b, len(self.boxes), 1, n, device=x.device, dtype=x.dtype)
        p = self.det_pad
        for r, box in enumerate(self.boxes):
            # the map is at half the padded input's scale: a box in input pixels, halved
            xa = max(0, int(((box[0] - p) * sx - ox) / 2))
            xb = max(xa + 1, math.ceil(((box[1] + p) * sx - ox) / 2))
            ya = max(0, int(((box[2] - p) * sy - oy) / 2))
            yb = max(ya + 1, math.ceil(((box[3] + p) * sy - oy) / 2))
            s = score[:, ya:yb, xa:xb].flatten(1)
            det[:, r, 0, 0] = s.amax(dim=1)
            det[:, r, 0, 1] = torch.relu(s - LOW_TEXT).mean(dim=1)
            det[:, r, 0, 2] = torch.relu(s - TEXT_THRESHOLD).mean(dim=1)
        return det

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """The recogniser's frames ``[B,R,T,C]`` of :meth:`forward`'s outputs (the detector row dropped)."""
        return outputs[:, :, : int(self.lengths.max())]

    def read(self, outputs: torch.Tensor) -> list[list[str]]:
        """Greedy readings ``[B][R]`` of :meth:`forward`'s outputs."""
        z = self.logits(outputs)
        b, r = z.shape[:2]
        flat = decode_greedy(z.reshape(b * r, z.shape[2], z.shape[3]), self.characters)
        return [flat[i * r:(i + 1) * r] for i in range(b)]


def _ratio(box: Box) -> float:
    """easyocr's ``calculate_ratio`` of a box of whole pixels: width over height (or its inverse)."""
    w = max(1, math.floor(box[1] + 0.5) - math.floor(box[0] + 0.5))
    h = max(1, math.floor(box[3] + 0.5) - math.floor(box[2] + 0.5))
    r = w / h
    return 1.0 / r if r < 1.0 else r
