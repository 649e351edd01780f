"""The one pipeline (jndkit.pipeline): every task's file is written under a hidden name, re-read,
judged from that re-read file, and named only when the task says it is protected."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from jndkit.images import LoadedImage, load_image
from jndkit.pipeline import Attempt, Record, Task, protect_one, read_records, run_paths


@dataclass
class ToyRecord(Record):
    seen_value: float | None = None


@dataclass
class Toy:
    """Brightens the top-left 8x8 block by ``delta`` grey levels; protected when the *re-read file*
    shows at least ``need`` levels there (so what the encoder did to it counts)."""

    delta: int = 20
    need: float = 10
    fmt: str = "png"
    quality: int = 95
    name: str = "toy"
    nothing: bool = False
    judged: list[torch.Tensor] = field(default_factory=list)

    def config_json(self) -> dict[str, Any]:
        return {"delta": self.delta}

    def new_record(self, src: Path) -> ToyRecord:
        return ToyRecord(input=str(src))

    def protect(self, image: LoadedImage, dst: Path, record: Record, progress: Any) -> Attempt:
        if self.nothing:
            return Attempt(None, status="no-thing", reason="nothing to protect here")
        x = image.rgb.clone()
        x[:, :8, :8] = (x[:, :8, :8] + self.delta / 255).clamp(0, 1)
        record.iterations = 1
        return Attempt(x)

    def judge(self, attempt: Attempt, clean: torch.Tensor, saved: torch.Tensor, record: Record) -> bool:
        self.judged.append(saved)
        assert isinstance(record, ToyRecord)
        record.seen_value = float((saved[:, :8, :8] - clean[:, :8, :8]).mean() * 255)
        record.success = record.seen_value >= self.need
        return record.success

    def why_not(self, record: Record) -> str:
        return f"only {getattr(record, 'seen_value', 0):.1f} levels survived"

    def summarise(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"toy_records": len(records)}


def _photo(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(60, 180, (32, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_toy_conforms_to_the_task_protocol():
    assert isinstance(Toy(), Task)


def test_a_protected_file_is_the_one_judged_and_nothing_else_is_left(tmp_path):
    src = _photo(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    task = Toy()
    rec = protect_one(task, src, out / "a.png")
    assert rec.status == "protected" and rec.task == "toy" and rec.output == str(out / "a.png")
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # no hidden temporary left
    assert torch.equal(task.judged[0], load_image(out / "a.png").rgb)  # judged = what is on disk
    assert rec.seen_value == pytest.approx(20.0)
    assert rec.linf == pytest.approx(20 / 255) and rec.changed_values == 3 * 64
    assert rec.psnr is not None and rec.above_jnd is not None and rec.ciede2000_max is not None


def test_a_failed_photo_writes_nothing_and_says_why(tmp_path):
    src = _photo(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    rec = protect_one(Toy(delta=5), src, out / "a.png")
    assert rec.status == "failed" and rec.output is None
    assert rec.error == f"{src}: not protected: only 5.0 levels survived; nothing written"
    assert list(out.iterdir()) == []


def test_the_judge_sees_the_encoded_file_not_the_attack(tmp_path):
    """On a flat grey photo, JPEG at quality 20 quantises away a 2-level change of one 8x8 block (its DC
    step is 5 levels); as PNG the same change is kept. The judge must see the file, and refuse the JPEG."""
    src = tmp_path / "grey.png"
    Image.fromarray(np.full((32, 40, 3), 128, np.uint8)).save(src)
    out = tmp_path / "out"
    out.mkdir()
    rec = protect_one(Toy(delta=2, need=1.5, fmt="jpg", quality=20), src, out / "grey.jpg")
    assert rec.status == "failed" and rec.seen_value is not None and abs(rec.seen_value) < 1
    assert list(out.iterdir()) == []
    rec = protect_one(Toy(delta=2, need=1.5), src, out / "grey.png")
    assert rec.status == "protected" and rec.seen_value == pytest.approx(2.0)


def test_nothing_to_protect_and_an_existing_output(tmp_path):
    src = _photo(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    rec = protect_one(Toy(nothing=True), src, out / "a.png")
    assert (rec.status, rec.output, rec.error) == ("no-thing", None, "nothing to protect here")
    (out / "a.png").write_bytes(b"mine")
    rec = protect_one(Toy(), src, out / "a.png")
    assert rec.status == "error" and "already exists" in str(rec.error)
    assert (out / "a.png").read_bytes() == b"mine"


def test_run_paths_keeps_report_json_with_the_task_and_its_record_type(tmp_path):
    photos = tmp_path / "in"
    (photos / "sub").mkdir(parents=True)
    _photo(photos / "a.png", 1)
    _photo(photos / "sub" / "b.png", 2)
    out = tmp_path / "out"
    recs = list(run_paths(Toy(), [photos], out))
    assert [r.status for r in recs] == ["protected", "protected"]
    assert (out / "sub" / "b.png").exists()  # the input tree is mirrored
    data = json.loads((out / "report.json").read_text())
    assert data["task"] == "toy" and data["config"] == {"delta": 20}
    assert data["summary"]["protected"] == 2 and data["summary"]["toy_records"] == 2
    old = read_records(Toy(), out / "report.json")
    assert isinstance(old[str(photos / "a.png")], ToyRecord) and old[str(photos / "a.png")].seen_value == 20.0
    again = list(run_paths(Toy(), [photos], out, resume=True))
    assert [r.status for r in again] == ["skipped", "skipped"]
    data = json.loads((out / "report.json").read_text())
    assert [d["status"] for d in data["images"]] == ["protected", "protected"]  # earlier records kept


def test_no_status_is_counted_in_the_summary(tmp_path):
    src = _photo(tmp_path / "a.png")
    list(run_paths(Toy(nothing=True), [src], tmp_path / "out"))
    s = json.loads((tmp_path / "out" / "report.json").read_text())["summary"]
    assert s["no_thing"] == 1 and s["protected"] == 0 and s["success_rate"] == 0.0


def test_every_task_goes_through_the_same_per_photo_step(tmp_path, monkeypatch):
    """classify and face: run_paths calls jndkit.pipeline.run.protect_one for both."""
    import jndkit.pipeline.run as pipeline_run
    from jndkit.face.record import FaceRecord
    from jndkit.face.task import FaceTask
    from jndkit.protect import ImageRecord, Protector

    seen: list[str] = []

    def spy(task, src, dst, progress=None):  # type: ignore[no-untyped-def]
        seen.append(task.name)
        rec = task.new_record(src)
        rec.status = "error"
        return rec

    monkeypatch.setattr(pipeline_run, "protect_one", spy)
    src = _photo(tmp_path / "a.png")

    class NoModel(Protector):
        def __init__(self) -> None:  # the task's loop only; no model is needed
            from jndkit.protect import ProtectConfig

            self.config = ProtectConfig.research()

    class FakeFaces:
        goal_spec, method_name, preset, max_iter, seed = "dodge", "ddn", None, None, 0
        kappa, threshold, min_prob, rounds, gallery = 0.05, 0.6, 0.9, 3, {}

    for task, kind in ((NoModel(), ImageRecord), (FaceTask(FakeFaces()), FaceRecord)):
        (rec,) = run_paths(task, [src], tmp_path / f"out-{task.name}")
        assert isinstance(rec, kind)
    assert seen == ["classify", "face"]
