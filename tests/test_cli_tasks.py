"""``jndkit protect --task detect|text`` go through the same pipeline, record line, report.json and
report page as classify and face; options a task does not take are errors naming both."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from jndkit.cli import app
from jndkit.samples import sample_array

runner = CliRunner()


def _photo(path, name, size):
    Image.fromarray(sample_array(name)).resize(size, Image.LANCZOS).save(path)
    return path


@pytest.mark.parametrize("task,opt", [("detect", ["--gallery", "x"]), ("detect", ["--model", "mobilenet_v2"]),
                                      ("text", ["--jnd", "chou"]), ("face", ["--background", "white"])])
def test_options_a_task_does_not_take_are_errors(tmp_path, task, opt):
    src = _photo(tmp_path / "a.png", "coffee", (64, 48))
    r = runner.invoke(app, ["protect", "--task", task, str(src), "-o", str(tmp_path / "o"), *opt])
    assert r.exit_code == 2 and opt[0] in r.output and f"--task {task}" in r.output
    assert not (tmp_path / "o").exists()


def test_detect_hides_the_person_and_the_report_draws_the_boxes(tmp_path):
    src = _photo(tmp_path / "astronaut.png", "astronaut", (320, 320))
    out = tmp_path / "out"
    r = runner.invoke(app, ["protect", "--task", "detect", str(src), "-o", str(out), "--upload", "none"])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "report.json").read_text())
    assert data["task"] == "detect" and data["config"]["goal"] == "vanish"
    (item,) = data["images"]
    assert item["status"] == "protected" and item["output"] == str(out / "astronaut.png")
    assert any(b["name"] == "person" and b["score"] > 0.5 for b in item["boxes_before"])
    assert not any(b["name"] == "person" for b in item["boxes_after"])  # judged on the written file
    from jndkit.detect import load_ssd
    from jndkit.images import load_image

    again = load_ssd().detect(load_image(out / "astronaut.png").rgb[None])[0]  # a fresh detector, from the file
    assert not any(d.name == "person" for d in again)
    page = (tmp_path / "out.report" / "report.html").read_text()
    assert "detector: person" in page
    drawn = np.asarray(Image.open(tmp_path / "out.report" / "assets" / "0000_original.png")).astype(int)
    plain = np.asarray(Image.open(src).resize(drawn.shape[1::-1])).astype(int)
    assert np.abs(drawn - plain).max() > 100  # the box outline is drawn on the original
    v = runner.invoke(app, ["verify", "--task", "detect", str(src), str(out / "astronaut.png"), "--upload", "none",
                            "--json"])
    assert v.exit_code == 0, v.output
    verdict = json.loads(v.stdout)
    assert verdict["success"] is True and [c["transform"] for c in verdict["checks"]] == ["file"]
    assert verdict["boxes_before"][0]["name"] == "person"
    clean = runner.invoke(app, ["verify", "--task", "detect", str(src), str(src), "--upload", "none"])
    assert clean.exit_code == 1 and "does not hold" in clean.output  # the untouched photo still shows a person


def test_text_task_on_a_photo_without_text_writes_nothing(tmp_path):
    src = tmp_path / "grey.png"
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(src)
    out = tmp_path / "out"
    r = runner.invoke(app, ["protect", "--task", "text", str(src), "-o", str(out)])
    assert r.exit_code == 1, r.output
    (item,) = json.loads((out / "report.json").read_text())["images"]
    assert item["status"] == "no-text" and item["output"] is None
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    assert "1 without text" in r.output


def test_file_names_and_messages_are_printed_as_text_not_markup(tmp_path):
    bad = tmp_path / "x[red]y.png"
    bad.write_bytes(b"not an image")
    r = runner.invoke(app, ["protect", str(bad), "-o", str(tmp_path / "o"), "--research"])
    assert r.exit_code == 1
    (line,) = [ln for ln in r.output.splitlines() if "✗" in ln]
    assert "x[red]y.png" in line  # rich would have eaten "[red]" as a colour tag
    r = runner.invoke(app, ["protect", str(tmp_path / "x.png"), "-o", str(tmp_path / "o2"), "--model", "no[bold]such"])
    assert r.exit_code == 2 and "no[bold]such" in r.output  # fail() prints its message as text too


def test_verify_face_judges_every_face_per_recogniser_and_upload(tmp_path):
    from pathlib import Path

    photo = Path(__file__).parent / "data" / "face_photos" / "obama.jpg"
    r = runner.invoke(app, ["verify", "--task", "face", str(photo), str(photo), "--upload", "x0.75+jpeg85", "--json"])
    assert r.exit_code == 1, r.output  # the untouched photo: still recognised
    data = json.loads(r.stdout)
    (face,) = data["faces"]
    assert data["protected"] is False and face["protected"] is False
    cells = {(c["recogniser"], c["transform"]): c for c in face["checks"]}
    assert set(cells) == {(n, t) for n in ("dlib", "facenet_casia") for t in ("saved", "x0.75+jpeg85")}
    assert cells[("dlib", "saved")]["distance"] == 0.0 and cells[("facenet_casia", "saved")]["distance"] == 0.0
    assert 0 < cells[("dlib", "x0.75+jpeg85")]["distance"] < cells[("dlib", "x0.75+jpeg85")]["threshold"]


@pytest.mark.parametrize("opts,words", [(["--model", "dlib", "--gallery", "."], ["--model", "--gallery"]),
                                        (["--strength", "strong", "--research"], ["--strength", "--research"]),
                                        (["--upload", "none", "--goal", "hide"], ["--upload", "--goal hide"]),
                                        (["--model", "mobilenet_v2"], ["mobilenet_v2"])])
def test_face_panel_and_single_recogniser_options_do_not_mix(tmp_path, opts, words):
    """Dodging is judged by a panel of recognisers (--model, --upload, --strength); --research, a gallery,
    hide or impersonate use dlib alone: asking for both is an error naming the options."""
    src = _photo(tmp_path / "a.png", "coffee", (64, 48))
    r = runner.invoke(app, ["protect", "--task", "face", str(src), "-o", str(tmp_path / "o"), *opts])
    assert r.exit_code == 2, r.output
    assert all(w in r.output for w in words), r.output
