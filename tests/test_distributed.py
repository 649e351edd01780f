"""jndkit.distributed: the Ray Data adapter gives the single-process run's files and records.

The task is a small research-mode classify task on mobilenet_v2 (the ``levels`` method, untargeted,
the saved file judged from scratch), written here against the pipeline's Task protocol so the adapter
is tested on the one per-photo call (:func:`jndkit.pipeline.protect_one`) it shares with the CLI.
Fast tests call the map_batches callable class directly (no Ray); the slow test runs a local Ray
(``ray.init(num_cpus=2)``) over 8 photos and compares bytes and records with :func:`run_paths`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from jndkit.errors import InputError, OutputError
from jndkit.images import LoadedImage, quantize
from jndkit.pipeline import Attempt, Record, protect_one, run_paths

TESTS_DIR = str(Path(__file__).resolve().parent)
MAX_ITER = 40


class TinyClassifyTask:
    """mobilenet_v2, ``levels``, untargeted, PNG: attack -> write -> judge the re-read file."""

    name = "classify"
    fmt = "png"
    quality = 95

    def __init__(self, seed: int = 0) -> None:
        from jndkit.attacks import get_method
        from jndkit.victims import load_victim

        self.seed = seed
        self.victim = load_victim("mobilenet_v2")
        self.method = get_method("levels")

    def config_json(self) -> dict[str, Any]:
        return {"model": "mobilenet_v2", "method": "levels", "goal": "untargeted", "seed": self.seed}

    def new_record(self, src: Path) -> Record:
        return Record(input=str(src))

    def _goal(self, clean: torch.Tensor) -> Any:
        from jndkit.goals import parse_goal

        return parse_goal("untargeted").bind(self.victim(clean[None]), self.victim)

    def protect(self, image: LoadedImage, dst: Path, record: Record, progress: Any) -> Attempt:
        from jndkit.attacks import run_attack
        from jndkit.goals import parse_goal

        x0 = quantize(image.rgb)[None]
        res = run_attack(self.method, self.victim, parse_goal("untargeted"), x0, max_iter=MAX_ITER, seed=self.seed)
        record.success_engine = bool(res.success[0])
        record.iterations, record.tries = int(res.iterations[0]), int(res.tries[0])
        return Attempt(image=res.x_adv[0])

    @torch.no_grad()
    def judge(self, attempt: Attempt, clean: torch.Tensor, saved: torch.Tensor, record: Record) -> bool:
        goal = self._goal(clean)
        out = self.victim(saved[None])
        record.success = bool(goal.reached(out)[0])
        record.margin = float(goal.margin(out)[0])
        return record.success

    def why_not(self, record: Record) -> str:
        return "mobilenet_v2 still answers the clean class on the saved file"

    def summarise(self, records: Sequence[Record]) -> dict[str, Any]:
        return {}


def _photos(folder: Path, n: int = 8) -> list[Path]:
    """``n`` small photos (64x48 crops of package-shipped samples, PNG) in ``folder`` and a sub-folder."""
    from jndkit.samples import sample_array

    names = ["coffee", "chelsea", "astronaut", "rocket", "china", "flower", "grace_hopper", "coffee"]
    out = []
    for i in range(n):
        arr = sample_array(names[i % len(names)])
        h, w = arr.shape[:2]
        y, x = (h // 5 * (i % 3)), (w // 7 * (i % 4))
        crop = Image.fromarray(arr[y:y + h // 2, x:x + w // 2]).resize((64, 48), Image.Resampling.LANCZOS)
        p = folder / ("sub" if i >= 5 else "") / f"p{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        crop.save(p)
        out.append(p)
    return out


def _comparable(rec: Record, out_dir: Path) -> dict[str, Any]:
    """A record's JSON without ``seconds``, its output relative to the output folder."""
    d = rec.to_json()
    d.pop("seconds")
    if d["output"]:
        d["output"] = str(Path(d["output"]).relative_to(out_dir))
    return d


@pytest.fixture(scope="module")
def task() -> TinyClassifyTask:
    return TinyClassifyTask()


# ------------------------------------------------------------------------------------------ no Ray needed
def test_missing_ray_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from jndkit import distributed

    real = importlib.import_module

    def no_ray(name: str, *a: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a)

    monkeypatch.setattr(distributed.importlib, "import_module", no_ray)
    with pytest.raises(InputError, match=r"pip install 'jndkit\[ray\]'"):
        distributed.import_ray()
    with pytest.raises(InputError, match="ray"):
        list(distributed.protect_paths_ray(TinyClassifyTask, ["x.png"], "out"))


def test_batch_class_matches_protect_one_on_paths_and_bytes(tmp_path: Path, task: TinyClassifyTask) -> None:
    """The map_batches callable, called as Ray calls it (a numpy batch), gives protect_one's record and
    file; the bytes form gives the same file's bytes back, and records the original name, not a temp path."""
    from jndkit.distributed import ProtectBatch, record_of

    src = _photos(tmp_path / "in", 2)
    (tmp_path / "ref").mkdir()
    ref = protect_one(task, src[0], tmp_path / "ref" / "p0.png")
    assert ref.status == "protected", ref.error

    worker = ProtectBatch.__new__(ProtectBatch)  # the task already built: skip loading mobilenet again
    worker.task = task
    (tmp_path / "a").mkdir()
    cols = worker({"src": np.array([str(src[0]), str(tmp_path / "in/none.png")]),
                   "dst": np.array([str(tmp_path / "a/p0.png"), str(tmp_path / "a/none.png")])})
    assert list(cols["status"]) == ["protected", "error"]
    got = record_of({"record": cols["record"][0]})
    assert _comparable(got, tmp_path / "a") == _comparable(ref, tmp_path / "ref")
    assert (tmp_path / "a/p0.png").read_bytes() == (tmp_path / "ref/p0.png").read_bytes()
    assert "none.png" in record_of({"record": cols["record"][1]}).error

    bcols = worker({"bytes": np.array([src[0].read_bytes(), b"not an image"], dtype=object),
                    "path": np.array(["s3://bucket/p0.png", "s3://bucket/bad.png"])})
    assert list(bcols["status"]) == ["protected", "error"]
    assert bcols["protected"][0] == (tmp_path / "ref/p0.png").read_bytes()
    assert bcols["protected"][1] == b""
    rec = pickle.loads(bcols["record"][0])
    assert (rec.input, rec.output, rec.psnr) == ("s3://bucket/p0.png", "p0.png", ref.psnr)
    bad = pickle.loads(bcols["record"][1])
    assert bad.error.startswith("s3://bucket/bad.png") and "jndkit-ray-" not in bad.error


def test_batch_class_refuses_unknown_columns(task: TinyClassifyTask) -> None:
    from jndkit.distributed import ProtectBatch

    worker = ProtectBatch.__new__(ProtectBatch)
    worker.task = task
    with pytest.raises(InputError, match=r"src\+dst or bytes\+path.*\['image'\]"):
        worker({"image": np.zeros(1)})


def test_task_factory_rebuilds_a_protector_from_its_config_and_ships_other_tasks(task: TinyClassifyTask) -> None:
    import functools

    from jndkit.distributed import task_factory
    from jndkit.protect import ProtectConfig, Protector

    cfg = ProtectConfig.research(max_iter=7, seed=3)
    prot = Protector(cfg, victim=task.victim)
    make = task_factory(prot)
    assert isinstance(make, functools.partial) and make.func is Protector and make.args == (cfg,)
    shipped = pickle.loads(pickle.dumps(task_factory(task)))()  # what a worker gets
    assert type(shipped) is TinyClassifyTask and shipped is not task
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shipped.victim(x), task.victim(x))


def test_cli_engine_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--engine`` other than local/ray and ``--workers 0`` are refused; ``--engine ray`` without Ray
    Data says what to install, before any model loads or any output folder is made."""
    from typer.testing import CliRunner

    from jndkit import distributed
    from jndkit.cli import app

    src = _photos(tmp_path / "in", 1)[0]
    res = CliRunner().invoke(app, ["protect", str(src), "-o", str(tmp_path / "o"), "--engine", "spark"])
    assert res.exit_code != 0 and "--engine must be local or ray" in res.output
    res = CliRunner().invoke(app, ["protect", str(src), "-o", str(tmp_path / "o"), "--engine", "ray", "--workers", "0"])
    assert res.exit_code != 0 and "--workers >= 1, got 'ray' and 0" in res.output

    real = importlib.import_module
    monkeypatch.setattr(distributed.importlib, "import_module",
                        lambda name, *a: (_ for _ in ()).throw(ImportError(name)) if name.startswith("ray")
                        else real(name, *a))
    res = CliRunner().invoke(app, ["protect", str(src), "-o", str(tmp_path / "o"), "--engine", "ray", "--research"])
    assert res.exit_code != 0 and "pip install 'jndkit[ray]'" in res.output
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- local Ray
@pytest.mark.slow
def test_ray_equals_single_process_bit_for_bit(tmp_path: Path) -> None:
    """8 photos (one bad file beside them) on ray.init(num_cpus=2), 2 workers: the same output files
    (bytes), the same records (all fields but seconds), the same report.json; resume skips them all;
    a folder holding someone else's report.json is refused before Ray starts any work."""
    ray = pytest.importorskip("ray")
    from jndkit.distributed import protect_paths_ray

    _photos(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    single_task = TinyClassifyTask()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker with num_cpus=1 runs (float reductions depend on it)
    try:
        single = list(run_paths(single_task, [tmp_path / "in"], tmp_path / "one"))
    finally:
        torch.set_num_threads(threads)
    assert len(single) == 9 and sum(r.status == "protected" for r in single) >= 6

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]),
                                       "OMP_NUM_THREADS": "1"}})
    try:
        distributed = list(protect_paths_ray(TinyClassifyTask, [tmp_path / "in"], tmp_path / "ray",
                                             workers=2, num_cpus=1, task=single_task))
        assert [_comparable(r, tmp_path / "ray") for r in distributed] == \
               [_comparable(r, tmp_path / "one") for r in single]
        for r in single:
            if r.status == "protected":
                rel = Path(r.output).relative_to(tmp_path / "one")
                assert hashlib.sha256((tmp_path / "ray" / rel).read_bytes()).hexdigest() == \
                       hashlib.sha256((tmp_path / "one" / rel).read_bytes()).hexdigest()
        made = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file())
        assert made == sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
        rep_one = json.loads((tmp_path / "one/report.json").read_text())
        rep_ray = json.loads((tmp_path / "ray/report.json").read_text())
        for rep, out in ((rep_one, tmp_path / "one"), (rep_ray, tmp_path / "ray")):
            rep["summary"].pop("mean_seconds")
            for item in rep["images"]:
                item.pop("seconds")
                item["output"] = item["output"] and str(Path(item["output"]).relative_to(out))
        assert rep_ray == rep_one

        # resume: protected photos skipped, the others tried again; the report as run_paths leaves it
        again = list(protect_paths_ray(TinyClassifyTask, [tmp_path / "in"], tmp_path / "ray", resume=True,
                                       workers=2, task=single_task))
        assert [r.status for r in again] == ["skipped" if r.status == "protected" else r.status for r in single]
        torch.set_num_threads(1)
        try:
            again_one = list(run_paths(single_task, [tmp_path / "in"], tmp_path / "one", resume=True))
        finally:
            torch.set_num_threads(threads)
        assert [_comparable(r, tmp_path / "ray") for r in again] == \
               [_comparable(r, tmp_path / "one") for r in again_one]

        def statuses(folder: str) -> list[tuple[str, str]]:
            items = json.loads((tmp_path / folder / "report.json").read_text())["images"]
            return [(i["input"], i["status"]) for i in items]

        rep_again = statuses("ray")
        assert rep_again == statuses("one")
        assert sorted(rep_again) == sorted((i["input"], i["status"]) for i in rep_ray["images"])

        (tmp_path / "theirs").mkdir()
        (tmp_path / "theirs/report.json").write_text('{"mine": 1}')
        with pytest.raises(OutputError, match="not a jndkit report"):
            list(protect_paths_ray(TinyClassifyTask, [tmp_path / "in"], tmp_path / "theirs", task=single_task))
    finally:
        ray.shutdown()
