"""``jndkit machine-jnd`` through typer's runner: files written, reports checked against the files,
bad input, never overwriting. Tiny settings: one classifier, a few steps, photos of a few thousand pixels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from jndkit.cli import app
from jndkit.images import load_image
from jndkit.machine_jnd import apply_jnd_net, load_jnd_net
from jndkit.samples import sample_array

runner = CliRunner()
MODEL = ["--models", "mobilenet_v2"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _photo(path, name="chelsea", size=(72, 56)):
    Image.fromarray(sample_array(name)).resize(size, Image.LANCZOS).save(path)
    return path


def _mj(*args):
    return runner.invoke(app, ["machine-jnd", *[str(a) for a in args]])


def _lines_naming(output: str, name: str) -> list[str]:
    return [ln for ln in output.splitlines() if name in ln]


def test_apply_per_image_writes_three_files_and_a_report_that_matches_them(tmp_path, mobilenet):
    src = _photo(tmp_path / "cat.png")
    out = tmp_path / "out"
    r = _mj("apply", src, "-o", out, "--per-image", *MODEL, "--steps", 6)
    assert r.exit_code == 0, r.output
    x = load_image(src).rgb
    saved = load_image(out / "cat.png").rgb
    assert saved.shape == x.shape == (3, 56, 72)  # the photo's own size

    e = np.load(out / "cat_jnd.npy")
    assert e.shape == (3, 56, 72) and e.dtype == np.float32
    np.testing.assert_allclose(e, (saved - x).numpy(), atol=1e-6)  # raw e = file - input
    assert np.abs(e).max() > 2 / 255  # a real change, not the zero fallback
    assert np.allclose(e * 255, np.round(e * 255), atol=1e-3)  # whole 8-bit levels

    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "machine-jnd"  # the one pipeline's report.json: the run's settings under config
    assert report["config"]["method"] == "per-image" and report["config"]["models"] == ["mobilenet_v2"]
    assert report["summary"]["done"] == 1 and report["summary"]["errors"] == 0
    item = report["images"][0]
    assert item["status"] == "done" and item["file_matches_computation"] is True
    ev = item["evaluation"]
    assert ev["rca"]["per_classifier"] == {"mobilenet_v2": 100.0}
    with torch.no_grad():  # the victim, run afresh on the PNG read back, keeps its answer
        clean, after = int(mobilenet(x[None]).argmax()), int(mobilenet(saved[None]).argmax())
    assert after == clean
    assert item["labels"]["mobilenet_v2"] == {"clean": mobilenet.label(clean), "saved": mobilenet.label(after)}
    mse = float(((saved - x).double() ** 2).mean())
    assert ev["psnr_mean"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)
    assert ev["mean_abs_e"] == pytest.approx(float(np.abs(e).mean()), abs=1e-6)
    assert set(ev["white_noise"]) >= {"rca", "per_classifier", "psnr_mean"} and "pass" in ev["homogeneity"]

    vis = np.asarray(Image.open(out / "cat_jnd.png")).astype(int)
    white = item["jnd_png_white_levels"]
    assert white == pytest.approx(255 * float(np.abs(e).max()), abs=1e-3)
    expected = np.round(np.abs(e).max(axis=0) * 255 / white * 255)
    assert vis.shape == (56, 72, 3) and np.abs(vis[..., 1] - expected).max() <= 1 and vis.max() == 255
    assert "RCA 100.0%" in r.output


def test_max_side_works_on_a_smaller_copy_and_json_goes_to_stdout(tmp_path):
    src = _photo(tmp_path / "big.png", "astronaut", (96, 64))
    out = tmp_path / "out"
    r = _mj("apply", src, "-o", out, *MODEL, "--steps", 2, "--max-side", 48, "--json")
    assert r.exit_code == 0, r.output
    item = json.loads(r.stdout)["images"][0]
    assert item["size"] == [96, 64] and item["work_size"] == [48, 32]
    assert Image.open(out / "big.png").size == (48, 32) and np.load(out / "big_jnd.npy").shape == (3, 32, 48)


def test_bad_files_get_one_line_each_and_the_good_one_is_done(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _photo(src / "good.png", size=(48, 40))
    (src / "notes.png").write_text("this is not an image")
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    r = _mj("apply", src, missing, "-o", out, *MODEL, "--steps", 2)
    assert r.exit_code == 1
    (notes,) = _lines_naming(r.output, "notes.png")
    assert "not an image" in notes
    (miss,) = _lines_naming(r.output, "missing.png")
    assert "no such file" in miss
    assert all((out / n).exists() for n in ("good.png", "good_jnd.png", "good_jnd.npy"))
    assert not (out / "notes_jnd.npy").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["done"] == 1 and report["summary"]["errors"] == 2
    assert [i["status"] for i in report["images"]] == ["done", "error", "error"]


def test_existing_outputs_are_never_overwritten(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _photo(src / "taken.png", size=(40, 40))
    _photo(src / "free.png", "coffee", (40, 40))
    out = tmp_path / "out"
    out.mkdir()
    (out / "taken_jnd.npy").write_bytes(b"mine")  # one of the three outputs of taken.png exists
    r = _mj("apply", src, "-o", out, *MODEL, "--steps", 2)
    assert r.exit_code == 1
    (line,) = _lines_naming(r.output, "taken_jnd.npy")
    assert "already exists" in line
    assert (out / "taken_jnd.npy").read_bytes() == b"mine" and not (out / "taken.png").exists()
    assert (out / "free.png").exists()
    before = {n: (out / n).read_bytes() for n in ("free.png", "free_jnd.png", "free_jnd.npy")}
    again = _mj("apply", src / "free.png", "-o", out, *MODEL, "--steps", 2)  # as protect: a run into the same folder
    assert again.exit_code == 1
    (line,) = _lines_naming(again.output, "free.png: already exists")
    assert {n: (out / n).read_bytes() for n in before} == before
    report = json.loads((out / "report.json").read_text())  # the truth of the folder: free.png is still done
    assert [(Path(i["input"]).name, i["status"]) for i in report["images"]] == [("free.png", "done")]
    (out / "report.json").write_text("my notes")  # a report.json jndkit did not write is never replaced
    third = _mj("apply", src / "free.png", "-o", out, *MODEL, "--steps", 2)
    assert third.exit_code == 2 and "report.json" in third.output and (out / "report.json").read_text() == "my notes"


@pytest.mark.parametrize("args,msg", [(["--net", "n.pt", "--per-image"], "choose one"),
                                      (["--models", "resnet9000"], "unknown model"),
                                      (["--net", "nothing.pt"], "no such file"),
                                      (["--steps", "0"], "--steps")])
def test_bad_options_are_clear_errors(tmp_path, args, msg):
    src = _photo(tmp_path / "a.png", size=(32, 32))
    r = _mj("apply", src, "-o", tmp_path / "o", *args)
    assert r.exit_code == 2 and msg in r.output


# ---------------------------------------------------------------- train -> apply --net -> eval


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    data.mkdir()
    for name in ("chelsea", "astronaut", "coffee"):
        _photo(data / f"{name}.png", name, (40, 40))
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # one bad file: one line, left out
    net = root / "net.pt"
    r = _mj("train", "--data", data, "--size", 32, *MODEL, "--max-steps", 2, "--batch-size", 2,
            "--holdout", 0.34, "-o", net)
    return root, net, r


def test_train_writes_the_net_and_its_record(trained):
    root, net, r = trained
    assert r.exit_code == 1, r.output  # the bad file makes the exit code 1, training still happens
    (line,) = _lines_naming(r.output, "broken.png")
    assert "broken.png:" in line
    loaded = load_jnd_net(net)
    assert loaded.victim_names == ["mobilenet_v2"]
    record = json.loads((root / "net.json").read_text())
    assert record["bad_files"] == 1 and record["steps"] == 2 and [h["step"] for h in record["history"]] == [1.0, 2.0]
    assert record["config"]["batch_size"] == 2 and record["config"]["lr"] == 3e-3  # cpu config, overridden batch
    assert len(record["images"]["train"]) == 2 and len(record["images"]["held_out"]) == 1
    held = record["held_out"]
    assert held["images"] == 1 and set(held["rca"]["per_classifier"]) == {"mobilenet_v2"}
    assert "held out (1 images)" in r.output


def test_train_does_not_overwrite_an_existing_net(trained):
    root, net, _ = trained
    before = net.read_bytes()
    r = _mj("train", "--data", root / "data", "--size", 32, *MODEL, "--max-steps", 1, "-o", net)
    assert r.exit_code == 2 and "already exists" in r.output
    assert net.read_bytes() == before


def test_apply_net_uses_the_trained_net(trained, tmp_path, mobilenet):
    _, net, _ = trained
    src = _photo(tmp_path / "cat.png", size=(48, 40))
    out = tmp_path / "out"
    r = _mj("apply", src, "--net", net, "-o", out)  # classifiers come from the net file
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    cfg = report["config"]
    assert cfg["method"] == "net" and cfg["models"] == ["mobilenet_v2"] and cfg["steps"] is None
    x = load_image(src).rgb[None]
    expected = apply_jnd_net(load_jnd_net(net), [mobilenet], x)[0].numpy()
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(np.load(out / "cat_jnd.npy"), expected, atol=1e-6)


def test_eval_uses_the_nets_split_and_agrees_with_train(trained, tmp_path):
    root, net, _ = trained
    res = tmp_path / "results.json"
    r = _mj("eval", "--net", net, "-o", res)
    assert r.exit_code == 1, r.output  # NET.json's data folder still holds the bad file
    assert len(_lines_naming(r.output, "broken.png")) == 1
    data = json.loads(res.read_text())
    assert data["data"] == str(root / "data") and data["size"] == 32 and data["holdout"] == 0.34
    assert data["results"]["held_out"]["images"] == 1 and data["results"]["train"]["images"] == 2
    record = json.loads((root / "net.json").read_text())
    for key in ("rca", "psnr_mean", "mean_abs_e"):  # same net, same images: same numbers
        assert data["results"]["held_out"][key] == record["held_out"][key]
    again = _mj("eval", "--net", net, "-o", res)
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.slow
def test_full_size_photo_with_the_four_classifiers(tmp_path):
    src = tmp_path / "china.png"
    Image.fromarray(sample_array("china")).save(src)  # 640x427
    out = tmp_path / "out"
    r = _mj("apply", src, "-o", out, "--steps", 30)
    assert r.exit_code == 0, r.output
    assert Image.open(out / "china.png").size == (640, 427)
    item = json.loads((out / "report.json").read_text())["images"][0]
    assert set(item["evaluation"]["rca"]["per_classifier"]) == {
        "mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    assert item["evaluation"]["rca"]["mean"] == 100.0 and item["file_matches_computation"] is True
    assert item["evaluation"]["psnr_mean"] < 60  # a measurable change


# ---------------------------------------------------------------- the library calls behind the commands


def test_downscale_matches_pillow_bilinear_and_alpha_follows():
    from jndkit.machine_jnd import downscale

    im = Image.fromarray(sample_array("astronaut")).resize((96, 64), Image.LANCZOS)
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float()[None] / 255
    alpha = (np.arange(96 * 64).reshape(64, 96) % 256).astype(np.uint8)
    small, a = downscale(x, alpha, 48)
    assert small.shape == (1, 3, 32, 48) and a is not None and a.shape == (32, 48) and a.dtype == np.uint8
    got = np.round(small[0].permute(1, 2, 0).numpy() * 255)
    np.testing.assert_allclose(got, small[0].permute(1, 2, 0).numpy() * 255, atol=1e-3)  # whole 8-bit levels
    ref = np.asarray(im.resize((48, 32), Image.BILINEAR)).astype(int)
    assert np.abs(got.astype(int) - ref).max() <= 1  # Pillow's antialiased bilinear, to one level
    ref_a = np.asarray(Image.fromarray(alpha).resize((48, 32), Image.BILINEAR)).astype(int)
    assert np.abs(a.astype(int) - ref_a).max() <= 1
    same, same_a = downscale(x, alpha, 96)  # already small enough: untouched
    assert same is x and same_a is alpha


def test_jnd_picture_scales_the_largest_change_to_white():
    from jndkit.machine_jnd import jnd_picture

    e = torch.zeros(3, 2, 2)
    e[0, 0, 0], e[2, 0, 0] = 1 / 255, -3 / 255  # the max over R,G,B of |e| is 3 levels
    e[1, 1, 1] = 2 / 255
    pic, white = jnd_picture(e)
    assert white == pytest.approx(3.0)
    assert torch.allclose(pic[0], torch.tensor([[1.0, 0.0], [0.0, 2 / 3]]))
    assert torch.equal(pic[0], pic[2])
    zero, level = jnd_picture(torch.zeros(3, 2, 2))
    assert level == 0.0 and float(zero.abs().max()) == 0.0


def test_evaluation_settings_inherit_from_net_json_only_for_the_nets_own_data():
    from jndkit.machine_jnd import EvalSettings, inherit_settings

    meta = {"data": "/photos", "size": 32, "crops_per_photo": 2, "seed": 5, "holdout": 0.34}
    assert inherit_settings(meta) == EvalSettings("/photos", 32, 2, 5, 0.34)
    assert inherit_settings(meta, data="/photos", size=64) == EvalSettings("/photos", 64, 2, 5, 0.34)
    # other data: size, crops and split are not the net's (only the seed is inherited)
    assert inherit_settings(meta, data="shipped") == EvalSettings("shipped", 224, 4, 5, 0.0)
    assert inherit_settings(meta, data="cifar10:/c", holdout=0.5, seed=1) == EvalSettings("cifar10:/c", 32, 4, 1, 0.5)
    assert inherit_settings({}) == EvalSettings("shipped", 224, 4, 0, 0.0)


def test_materialise_passes_bad_files_on_and_keeps_the_rest(tmp_path):
    from jndkit.errors import ImageError, InputError
    from jndkit.machine_jnd import materialise

    _photo(tmp_path / "a.png", size=(40, 30))
    (tmp_path / "b.png").write_text("not a png")
    _photo(tmp_path / "c.png", "coffee", (30, 40))
    seen: list[ImageError] = []
    images, bad = materialise(str(tmp_path), 16, 0, 4, on_bad=seen.append)
    assert bad == 1 and [e.path for e in seen] == [str(tmp_path / "b.png")]
    assert images.names == ["a.png", "c.png"] and tuple(images.images.shape) == (2, 3, 16, 16)
    (tmp_path / "a.png").unlink()
    (tmp_path / "c.png").unlink()
    with pytest.raises(InputError, match="no readable images"):
        materialise(str(tmp_path), 16, 0, 4)


def test_eval_with_an_unreadable_net_json_warns_and_uses_the_defaults(trained, tmp_path):
    import shutil

    root, net, _ = trained
    copy = tmp_path / "net.pt"
    shutil.copy(net, copy)
    (tmp_path / "net.json").write_text("{ broken")
    res = tmp_path / "results.json"
    r = _mj("eval", "--net", copy, "--data", root / "data", "--size", 32, "-o", res)
    assert r.exit_code == 1, r.output  # the data folder holds the bad file
    (warning,) = _lines_naming(r.output, "net.json")
    assert "warning" in warning and "not read" in warning and "using the defaults" in warning
    data = json.loads(res.read_text())
    assert data["holdout"] == 0.0 and data["seed"] == 0 and list(data["results"]) == ["all"]
    assert data["results"]["all"]["images"] == 3 and data["models"] == ["mobilenet_v2"]  # classifiers: the net's
