"""jndkit.study: trial design, CSV answers, statistics (against hand-computed values and scipy), the server
(FastAPI TestClient) and the ``jndkit study`` command."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from scipy import stats as sps
from typer.testing import CliRunner

from jndkit.cli import app
from jndkit.errors import InputError
from jndkit.study import (
    COLUMNS,
    Answer,
    append_answer,
    catch_failure,
    detection,
    format_report,
    make_answer,
    match_folders,
    mos,
    plan_trials,
    read_answers,
    study_report,
)
from jndkit.study.media import centre_crop, noise_image
from jndkit.study.server import create_app

runner = CliRunner()


def _photo(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _make_folders(root: Path, n: int = 4, methods: tuple[str, ...] = ("mnd", "hvs")) -> tuple[Path, list[Path]]:
    """n originals (JPEG, one in a sub-folder) and, per method, PNG copies changed by +1 level (+2 for the 2nd)."""
    orig = root / "orig"
    prots = [root / m for m in methods]
    for i in range(n):
        rel = Path("sub") / f"im{i}" if i == 0 else Path(f"im{i}")
        arr = _photo(i)
        (orig / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save((orig / rel).with_suffix(".png"))
        for j, p in enumerate(prots):
            (p / rel).parent.mkdir(parents=True, exist_ok=True)
            changed = np.clip(arr.astype(int) + j + 1, 0, 255).astype(np.uint8)
            Image.fromarray(changed).save((p / rel).with_suffix(".png"))
    return orig, prots


@pytest.fixture()
def study(tmp_path):
    orig, prots = _make_folders(tmp_path)
    return replace(match_folders(orig, prots), catch=2)


# ---------------------------------------------------------------- matching folders


def test_folders_match_by_relative_path_without_suffix(tmp_path):
    orig, prots = _make_folders(tmp_path, n=3)
    # a protected JPEG matches a PNG original: only the suffix differs
    (prots[0] / "im1.png").rename(prots[0] / "im1.jpg")
    s = match_folders(orig, prots)
    assert [im.key for im in s.images] == ["im1", "im2", "sub/im0"]
    assert s.methods == ("mnd", "hvs")
    assert s.image("im1").protected["mnd"].name == "im1.jpg"
    assert s.image("sub/im0").original == orig / "sub" / "im0.png"


def test_unmatched_files_are_named_in_the_error(tmp_path):
    orig, prots = _make_folders(tmp_path, n=3)
    (prots[1] / "im2.png").unlink()
    with pytest.raises(InputError, match=r"hvs: no protected version of im2 \(from .*orig\)"):
        match_folders(orig, prots)
    Image.fromarray(_photo(9)).save(prots[0] / "extra.png")
    with pytest.raises(InputError, match=r"mnd: no original in .*orig for extra"):
        match_folders(orig, prots)
    # --intersection keeps what every folder has
    s = match_folders(orig, prots, intersection=True)
    assert [im.key for im in s.images] == ["im1", "sub/im0"]


def test_two_files_that_differ_only_by_suffix_are_refused(tmp_path):
    orig, prots = _make_folders(tmp_path, n=2)
    Image.fromarray(_photo(1)).save(orig / "im1.jpg")
    with pytest.raises(InputError, match=r"im1\.(jpg|png) and im1\.(png|jpg) have the same name"):
        match_folders(orig, prots)


# ---------------------------------------------------------------- design


def test_every_pair_once_per_block_balanced_sides_and_rounds(study):
    plan = plan_trials(study, "p01")
    n_img, n_m = len(study.images), len(study.methods)
    assert len(plan) == 2 * (n_img * n_m + 2 * study.catch)
    assert [t.index for t in plan] == list(range(len(plan)))
    for block in ("flicker", "rating"):
        trials = [t for t in plan if t.block == block]
        tests = [t for t in trials if t.kind == "test"]
        assert Counter((t.image, t.method) for t in tests) == Counter(
            {(im.key, m): 1 for im in study.images for m in study.methods}
        )
        assert Counter(t.kind for t in trials if t.kind != "test") == {"noise": 2, "identical": 2}
        # rounds: each run of n_m consecutive test trials holds every method once
        for r in range(n_img):
            assert sorted(t.method for t in tests[r * n_m : (r + 1) * n_m]) == sorted(study.methods)
        # no image twice in a row among the test trials
        assert all(a.image != b.image for a, b in pairwise(tests))
        # catch trials never first, and not bunched together
        assert trials[0].kind == "test"
        catch_pos = [i for i, t in enumerate(trials) if t.kind != "test"]
        assert max(catch_pos) - min(catch_pos) >= len(trials) // 3
        if block == "flicker":
            for m in study.methods:
                sides = Counter(t.altered for t in tests if t.method == m)
                assert set(sides) <= {"left", "right"} and abs(sides["left"] - sides["right"]) <= 1
            assert Counter(t.altered for t in trials if t.kind == "noise") == {"left": 1, "right": 1}
            assert all(t.altered == "none" for t in trials if t.kind == "identical")
        else:
            assert all(t.altered == "none" for t in trials)
    # the two blocks are contiguous
    blocks = [t.block for t in plan]
    assert blocks == sorted(blocks, key=lambda b: blocks.index(b))


def test_plan_is_seeded_per_participant(study):
    a = plan_trials(study, "p01")
    assert a == plan_trials(study, "p01")
    others = [plan_trials(study, f"p{i:02d}") for i in range(2, 12)]
    assert any([t.trial_id for t in o] != [t.trial_id for t in a] for o in others)
    assert plan_trials(replace(study, seed=1), "p01") != a
    # which block comes first is drawn per participant: both orders occur
    assert {o[0].block for o in [a, *others]} == {"flicker", "rating"}
    # side balance across participants: each (image, method) is altered left for some and right for others
    left = Counter((t.image, t.method) for o in [a, *others] for t in o if t.block == "flicker" and t.altered == "left")
    assert min(left.values()) > 0 and max(left.values()) < 11


@pytest.mark.parametrize("pid", ["", "../x", "a b", "a/b", "x" * 65, "-x"])
def test_participant_ids_that_could_name_other_files_are_refused(study, pid):
    with pytest.raises(InputError, match="participant id"):
        plan_trials(study, pid)


def test_centre_crop_and_noise_catch_image():
    arr = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    np.testing.assert_array_equal(centre_crop(arr, 4), arr[3:7, 4:8])
    np.testing.assert_array_equal(centre_crop(arr, 11), arr[:, 0:11])
    assert centre_crop(arr, 0) is arr
    flat = np.full((64, 64, 3), 128, np.uint8)
    noisy = noise_image(flat, 40.0, seed=3)
    assert abs(float(noisy.astype(float).std()) - 40.0) < 1.5  # no clipping around 128 at sigma 40
    psnr = 10 * math.log10(255**2 / float(((noisy.astype(float) - 128) ** 2).mean()))
    assert psnr < 17.5
    np.testing.assert_array_equal(noisy, noise_image(flat, 40.0, seed=3))


# ---------------------------------------------------------------- answers (CSV)


def _answers(study, pid: str, rate, side) -> list[Answer]:
    """Answer a whole plan: ``rate(trial) -> 1..5``, ``side(trial) -> (side, saw)``."""
    out = []
    for t in plan_trials(study, pid):
        if t.block == "rating":
            out.append(make_answer(pid, study.fingerprint, t, rating=rate(t), response_ms=1000))
        else:
            s, saw = side(t)
            out.append(make_answer(pid, study.fingerprint, t, side=s, saw_change=saw, response_ms=900))
    return out


def test_csv_round_trip_row_by_row(tmp_path, study):
    answers = _answers(study, "p01", lambda t: 4, lambda t: ("left", "no"))
    path = tmp_path / "p01.csv"
    for i, a in enumerate(answers):
        append_answer(path, a)
        # each answer is on disk as soon as append_answer returns
        assert len(path.read_text().splitlines()) == i + 2
    assert read_answers([path]) == answers
    header = path.read_text().splitlines()[0]
    assert tuple(header.split(",")) == COLUMNS
    rows = csv.DictReader(io.StringIO(path.read_text()))
    row = next(r for r in rows if r["block"] == "flicker" and r["kind"] == "test")
    assert row["correct"] == ("1" if row["altered"] == "left" else "0")
    assert row["rating"] == ""


def test_a_trial_sent_twice_keeps_its_first_answer_and_bad_files_are_named(tmp_path, study):
    t = next(t for t in plan_trials(study, "p01") if t.block == "rating")
    path = tmp_path / "p01.csv"
    append_answer(path, make_answer("p01", "d", t, rating=5))
    append_answer(path, make_answer("p01", "d", t, rating=1))
    assert [a.rating for a in read_answers([path])] == ["5"]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"bad\.csv: not a jndkit study CSV"):
        read_answers([bad])
    with pytest.raises(InputError, match=r"missing\.csv: no such file"):
        read_answers([tmp_path / "missing.csv"])
    broken = tmp_path / "broken.csv"
    broken.write_text(path.read_text().replace(",5,", ",9,", 1))
    with pytest.raises(InputError, match=r"broken\.csv: line 2: rating '9' is not 1-5"):
        read_answers([broken])


def test_answers_are_checked_against_their_trial(study):
    plan = plan_trials(study, "p01")
    fl = next(t for t in plan if t.block == "flicker")
    rt = next(t for t in plan if t.block == "rating")
    with pytest.raises(InputError, match="side must be 'left' or 'right'"):
        make_answer("p01", "d", fl, side="up", saw_change="yes")
    with pytest.raises(InputError, match="saw_change must be"):
        make_answer("p01", "d", fl, side="left")
    with pytest.raises(InputError, match="takes no rating"):
        make_answer("p01", "d", fl, side="left", saw_change="no", rating=3)
    for bad in (0, 6, None, True):
        with pytest.raises(InputError, match="rating must be an integer 1-5"):
            make_answer("p01", "d", rt, rating=bad)
    with pytest.raises(InputError, match="takes only a rating"):
        make_answer("p01", "d", rt, rating=3, side="left")


# ---------------------------------------------------------------- statistics


def test_mos_against_hand_computed_values_and_scipy():
    m = mos([5, 4, 4, 3])
    assert (m.n, m.mean) == (4, 4.0)
    assert m.std == pytest.approx(math.sqrt(2 / 3))
    assert m.ci95 == pytest.approx(3.182446305284263 * math.sqrt(2 / 3) / 2)  # t_{0.975,3} by hand table
    xs = [5, 5, 4, 3, 4, 2, 5, 4, 4]
    lo, hi = sps.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=sps.sem(xs))
    assert mos(xs).ci95 == pytest.approx((hi - lo) / 2)
    one = mos([3])
    assert one.mean == 3 and math.isnan(one.ci95)
    assert mos([]).n == 0 and math.isnan(mos([]).mean)


def _flick(correct: str, saw: str = "no", kind: str = "test", altered: str = "left") -> Answer:
    side = altered if correct == "1" else ("right" if altered == "left" else "left")
    return Answer("p", "d", 0, "x", "flicker", kind, "im", "m", altered, side, saw, correct, "", 0, "")


def test_detection_binomial_against_hand_computed_values():
    d = detection([_flick("1", "yes")] * 9 + [_flick("0")])
    assert (d.n, d.correct, d.rate, d.saw, d.saw_rate) == (10, 9, 0.9, 9, 0.9)
    assert d.p_value == pytest.approx(11 / 1024)  # P(X >= 9), X ~ B(10, 1/2): (C(10,9) + C(10,10)) / 2^10
    d = detection([_flick("1")] * 5 + [_flick("0")] * 5)
    assert d.p_value == pytest.approx(638 / 1024)  # P(X >= 5) = (252 + 210 + 120 + 45 + 10 + 1) / 1024
    # identical pairs (no altered side) do not count as detection trials
    assert detection([_flick("", "yes", "identical", "none")]).n == 0


def test_catch_failures():
    assert catch_failure(_flick("1", "yes", "noise")) is None
    assert "chose right" in catch_failure(_flick("0", "yes", "noise"))
    assert "did not see" in catch_failure(_flick("1", "no", "noise"))
    assert "saw a change" in catch_failure(_flick("", "yes", "identical", "none"))
    assert catch_failure(_flick("", "no", "identical", "none")) is None
    r = Answer("p", "d", 1, "x", "rating", "noise", "im", "", "none", "", "", "", "4", 0, "")
    assert "rated 4" in catch_failure(r)
    assert catch_failure(replace(r, rating="3")) is None
    assert "rated 3" in catch_failure(replace(r, kind="identical", rating="3"))
    assert catch_failure(replace(r, kind="identical", rating="4")) is None
    assert catch_failure(replace(r, kind="test", rating="1")) is None


def _scripted(study, pid: str, lazy: bool = False) -> list[Answer]:
    """A participant who rates mnd 5 and hvs 4 (noise 1, identical 5), always finds the hvs side, and for mnd
    says left; ``lazy``: also says left on the noise catch and rates it 5."""

    def rate(t):
        if t.kind == "noise":
            return 5 if lazy else 1
        return {"mnd": 5, "hvs": 4, "": 5}[t.method]

    def side(t):
        if t.kind == "identical":
            return "left", "no"
        if t.kind == "noise":
            return ("left", "yes") if lazy else (t.altered, "yes")
        return (t.altered, "yes") if t.method == "hvs" else ("left", "no")

    return _answers(study, pid, rate, side)


def test_study_report_tables(study):
    answers = _scripted(study, "p01") + _scripted(study, "p02")
    rep = study_report(answers)
    assert set(rep.methods) == {"mnd", "hvs"}
    assert rep.participants == ["p01", "p02"] and rep.failures == []
    assert rep.mos["mnd"].mean == 5.0 and rep.mos["mnd"].n == 8 and rep.mos["mnd"].std == 0.0
    assert rep.mos["hvs"].mean == 4.0
    hvs = rep.detection["hvs"]
    assert (hvs.n, hvs.correct) == (8, 8) and hvs.p_value == pytest.approx(1 / 256)
    # mnd: "left" is right exactly when the altered side was left: per participant 2 of 4 (balanced sides)
    assert rep.detection["mnd"].correct == 4 and rep.detection["mnd"].p_value == pytest.approx(
        sps.binomtest(4, 8, 0.5, alternative="greater").pvalue
    )
    assert rep.catch_mos["noise"].mean == 1.0 and rep.catch_mos["identical"].mean == 5.0
    assert len(rep.per_image) == 8 and rep.per_image[("im1", "hvs")][0].n == 2
    text = format_report(rep)
    assert "hvs" in text and "4.00 ± -" not in text and "8/8" in text and "no catch trial failed" in text
    assert "5.00 ± 0.00" in text


def test_lazy_participant_is_flagged_and_can_be_excluded(study):
    answers = _scripted(study, "p01") + _scripted(study, "lazy", lazy=True)
    rep = study_report(answers)
    assert {f.participant for f in rep.failures} == {"lazy"}
    # 2 noise catch trials per block: 1 on the right (chose left) + 2 rated 5 = 3 failures
    assert len(rep.failures) == 3
    assert "FAILED" in format_report(rep)
    ex = study_report(answers, exclude_failed=True)
    assert ex.excluded == ["lazy"] and ex.participants == ["p01"]
    assert ex.mos["mnd"].n == 4


# ---------------------------------------------------------------- server


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_server_plan_pictures_and_answers(tmp_path, study):
    results = tmp_path / "results"
    client = TestClient(create_app(study, results))
    assert "Is it visible?" in client.get("/").text
    assert "api/answer" in client.get("/static/study.js").text
    assert client.get("/static/../design.py").status_code == 404
    assert client.get("/static/secret.txt").status_code == 404

    r = client.get("/api/plan/p01")
    assert r.status_code == 200
    body = r.json()
    plan = plan_trials(study, "p01")
    assert body["trials"] == [{"index": t.index, "block": t.block} for t in plan]  # no method, no side leaks
    assert body["answered"] == [] and body["flicker_ms"] == 200 and body["design"] == study.fingerprint
    assert client.get("/api/plan/..%2Fx").status_code in (400, 404)
    assert client.get("/api/plan/a b").status_code == 400

    # pictures: the altered side's second frame is the protected file, every other frame the original
    ft = next(t for t in plan if t.block == "flicker" and t.kind == "test")
    im = study.image(ft.image)
    orig = np.asarray(Image.open(im.original).convert("RGB"))
    prot = np.asarray(Image.open(im.protected[ft.method]).convert("RGB"))
    alt = "L1" if ft.altered == "left" else "R1"
    for slot in ("L0", "L1", "R0", "R1"):
        got = _decode(client.get(f"/api/picture/p01/{ft.index}/{slot}").content)
        np.testing.assert_array_equal(got, prot if slot == alt else orig)
    rt = next(t for t in plan if t.block == "rating" and t.kind == "test")
    im = study.image(rt.image)
    np.testing.assert_array_equal(_decode(client.get(f"/api/picture/p01/{rt.index}/ref").content),
                                  np.asarray(Image.open(im.original).convert("RGB")))
    np.testing.assert_array_equal(_decode(client.get(f"/api/picture/p01/{rt.index}/test").content),
                                  np.asarray(Image.open(im.protected[rt.method]).convert("RGB")))
    nt = next(t for t in plan if t.block == "rating" and t.kind == "noise")
    ref = _decode(client.get(f"/api/picture/p01/{nt.index}/ref").content).astype(float)
    noisy = _decode(client.get(f"/api/picture/p01/{nt.index}/test").content).astype(float)
    assert 10 * math.log10(255**2 / ((ref - noisy) ** 2).mean()) < 20
    it = next(t for t in plan if t.block == "flicker" and t.kind == "identical")
    frames = [client.get(f"/api/picture/p01/{it.index}/{s}").content for s in ("L0", "L1", "R0", "R1")]
    assert len(set(frames)) == 1
    assert client.get(f"/api/picture/p01/{ft.index}/ref").status_code == 404
    assert client.get(f"/api/picture/p01/{len(plan)}/L0").status_code == 404

    # answers: written to the CSV before the reply
    r = client.post("/api/answer", json={"participant": "p01", "trial": ft.index, "side": ft.altered,
                                         "saw_change": "yes", "response_ms": 1234})
    assert r.status_code == 200 and r.json() == {"saved": True, "answered": 1, "total": len(plan)}
    rows = read_answers([results / "p01.csv"])
    assert len(rows) == 1 and rows[0].correct == "1" and rows[0].response_ms == 1234 and rows[0].method == ft.method
    assert client.post("/api/answer", json={"participant": "p01", "trial": ft.index, "side": "left",
                                            "saw_change": "no"}).status_code == 409
    r = client.post("/api/answer", json={"participant": "p01", "trial": rt.index, "rating": 7})
    assert r.status_code == 422 and "rating must be an integer 1-5" in r.json()["detail"]
    assert client.post("/api/answer", json={"participant": "../p", "trial": 0, "rating": 3}).status_code == 400
    assert client.post("/api/answer", json={"participant": "p01", "trial": 999, "rating": 3}).status_code == 404
    assert client.post("/api/answer", json={"participant": "p01", "trial": rt.index, "rating": 2}).status_code == 200
    assert len(read_answers([results / "p01.csv"])) == 2

    # resume: a new server over the same folder knows what p01 answered
    client2 = TestClient(create_app(study, results))
    assert client2.get("/api/plan/p01").json()["answered"] == sorted([ft.index, rt.index])
    # another design (other seed) refuses to append to p01's file
    client3 = TestClient(create_app(replace(study, seed=5), results))
    r = client3.get("/api/plan/p01")
    assert r.status_code == 409 and "another study design" in r.json()["detail"]


# ---------------------------------------------------------------- command line


def test_cli_report_tables_and_json(tmp_path, study):
    for pid in ("p01", "p02"):
        for a in _scripted(study, pid):
            append_answer(tmp_path / f"{pid}.csv", a)
    files = [str(tmp_path / "p01.csv"), str(tmp_path / "p02.csv")]
    r = runner.invoke(app, ["study", "report", *files])
    assert r.exit_code == 0, r.output
    assert "MOS ± 95% CI" in r.stdout and "8/8" in r.stdout and "Average" in r.stdout
    r = runner.invoke(app, ["study", "report", "--json", *files])
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    by = {m["method"]: m for m in data["methods"]}
    assert by["hvs"]["mos"]["mean"] == 4.0 and by["hvs"]["detection"]["correct"] == 8
    assert by["mnd"]["mos"]["ci95"] == 0.0 and data["answers"] == 2 * len(plan_trials(study, "p01"))
    assert len(data["per_image"]) == 8 and data["catch_failures"] == []


def test_cli_report_exit_1_on_catch_failure_and_2_on_bad_file(tmp_path, study):
    for a in _scripted(study, "lazy", lazy=True):
        append_answer(tmp_path / "lazy.csv", a)
    r = runner.invoke(app, ["study", "report", str(tmp_path / "lazy.csv")])
    assert r.exit_code == 1 and "3 catch trial(s) FAILED" in r.stdout
    (tmp_path / "x.csv").write_text("nope\n")
    r = runner.invoke(app, ["study", "report", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "x.csv: not a jndkit study CSV" in r.stderr


def test_cli_study_runs_by_default_and_refuses_unmatched_folders(tmp_path, monkeypatch):
    orig, prots = _make_folders(tmp_path, n=2)
    seen = {}

    def fake_serve(study, results, *, host, port, on_ready):
        seen.update(study=study, results=results, host=host, port=port)
        on_ready(f"http://{host}:{port}/")

    monkeypatch.setattr("jndkit.study.server.serve_study", fake_serve)
    r = runner.invoke(app, ["study", str(orig), *map(str, prots), "--results", str(tmp_path / "res"),
                            "--port", "9999", "--seed", "3", "--crop", "32"])
    assert r.exit_code == 0, r.output
    assert "Study page: http://127.0.0.1:9999/" in r.stdout
    s = seen["study"]
    assert s.methods == ("mnd", "hvs") and s.seed == 3 and s.crop == 32 and len(s.images) == 2
    assert seen["results"] == tmp_path / "res" and seen["host"] == "127.0.0.1"
    (prots[0] / "im1.png").unlink()
    r = runner.invoke(app, ["study", str(orig), *map(str, prots)])
    assert r.exit_code == 2 and "mnd: no protected version of im1" in r.stderr
    r = runner.invoke(app, ["study", str(orig), str(prots[1]), "--flicker-ms", "5"])
    assert r.exit_code == 2 and "--flicker-ms >= 20" in r.stderr


def test_the_page_files_are_package_data():
    """An installed (non-editable) jndkit must carry the page: pyproject's package-data covers every static file."""
    import fnmatch

    import jndkit

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(jndkit.__file__).parent
    setup = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setup["package-data"]["jndkit"]
    static = sorted(p.relative_to(root).as_posix() for p in (root / "study" / "static").iterdir())
    assert static == ["study/static/index.html", "study/static/study.css", "study/static/study.js"]
    assert all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in static)
