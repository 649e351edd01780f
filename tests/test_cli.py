"""The CLI through typer's runner: protect (with the saved-file re-check), bad input, listings."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from jndkit.cli import app
from jndkit.images import encode_image, load_image
from jndkit.samples import sample_array

runner = CliRunner()


def _write_photo(path, name="chelsea", size=(160, 120)):
    Image.fromarray(sample_array(name)).resize(size, Image.LANCZOS).save(path)
    return path


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    src = tmp_path_factory.mktemp("in")
    _write_photo(src / "cat.png")
    _write_photo(src / "astro.png", "astronaut", (128, 128))
    out = tmp_path_factory.mktemp("out")
    result = runner.invoke(app, ["protect", str(src), "-o", str(out), "--max-iter", "150", "--research"])
    return src, out, result


def test_protect_writes_images_and_a_report_that_matches_the_files(protected, mobilenet):
    from jndkit.goals import Untargeted

    src, out, result = protected
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["protected"] == 2 and report["summary"]["errors"] == 0
    for item in report["images"]:
        assert item["status"] == "protected" and item["success"] is True
        clean = load_image(item["input"]).rgb[None]
        saved = load_image(item["output"]).rgb[None]
        assert saved.shape == clean.shape  # full resolution kept
        with torch.no_grad():
            goal = Untargeted().bind(mobilenet(clean))
            assert bool(goal.reached(mobilenet(saved))[0]) is item["success"]
            assert item["protected_top5"][0]["label"] == mobilenet.label(int(mobilenet(saved).argmax()))
        assert item["psnr"] > 50 and item["linf"] <= 2 / 255 + 1e-6
    from jndkit.report import report_dir

    page = report_dir(out) / "report.html"
    assert page.exists() and not (out / "report.html").exists()
    assert not [p for p in out.rglob("*") if "original" in p.name]  # the shared folder holds no original
    assert "cat.png" in page.read_text() and (report_dir(out) / "assets" / "0000_original.png").exists()
    assert "2/2 protected" in result.output


def test_640x427_photo_keeps_its_size(tmp_path):
    src = tmp_path / "china.png"
    Image.fromarray(sample_array("china")).save(src)
    result = runner.invoke(app, ["protect", str(src), "-o", str(tmp_path / "o"), "--no-html", "--research"])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "o" / "china.png").size == (640, 427)


def test_rerun_does_not_overwrite_and_resume_skips(protected):
    src, out, _ = protected
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    result = runner.invoke(app, ["protect", str(src), "-o", str(out), "--no-html", "--research"])
    assert result.exit_code == 1
    assert result.output.count("already exists") == 2
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before
    resumed = runner.invoke(app, ["protect", str(src), "-o", str(out), "--resume", "--no-html", "--research"])
    assert resumed.exit_code == 0, resumed.output
    assert "2 skipped" in resumed.output
    data = json.loads((out / "report.json").read_text())
    assert [i["status"] for i in data["images"]] == ["protected", "protected"]  # earlier records kept


def test_bad_inputs_each_get_one_line_and_the_rest_goes_on(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _write_photo(src / "good.png")
    (src / "notes.png").write_text("this is not an image")
    (src / "cut.jpg").write_bytes(encode_image(torch.rand(3, 64, 64), "jpg")[:700])
    Image.new("RGB", (1, 1)).save(src / "dot.png")
    out = tmp_path / "out"
    out.mkdir()
    _write_photo(out / "taken.png")  # an output that already exists
    _write_photo(src / "taken.png")
    missing = tmp_path / "missing.png"
    result = runner.invoke(app, ["protect", str(src), str(missing), "-o", str(out), "--max-iter", "150", "--no-html",
                                 "--research"])
    assert result.exit_code == 1
    lines = result.output.splitlines()

    def line_for(name):
        hits = [ln for ln in lines if name in ln]
        assert len(hits) == 1, (name, result.output)
        return hits[0]

    assert "not an image" in line_for("notes.png")
    assert "truncated" in line_for("cut.jpg")
    assert "too small" in line_for("dot.png")
    assert "no such file" in line_for("missing.png")
    assert "already exists" in line_for("taken.png")
    assert "good.png" in result.output and (out / "good.png").exists()
    assert np.array_equal(np.asarray(Image.open(out / "taken.png")), np.asarray(Image.open(src / "taken.png")))
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["protected"] == 1 and report["summary"]["errors"] == 5


def test_unwritable_output_folder(tmp_path):
    src = _write_photo(tmp_path / "a.png")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    result = runner.invoke(app, ["protect", str(src), "-o", str(blocker / "out")])
    assert result.exit_code == 2
    assert "cannot be written" in result.output and str(blocker) in result.output


@pytest.mark.parametrize("args,msg", [(["--method", "nope"], "unknown method"), (["--goal", "sideways"], "unknown goal"),
                                      (["--model", "resnet9000"], "unknown model"), (["--format", "gif"], "format"),
                                      (["--robust", "jpeg:0"], "robust"), (["--strength", "loud"], "strength must be"),
                                      (["--upload", "jpeg200"], "upload"), (["--max-iter", "0"], "max_iter must be >= 1"),
                                      (["--research", "--strength", "strong"], "--strength sets the human-JND budget"),
                                      (["--jnd", "nope"], "jnd must be one of"),
                                      (["--background", "nope"], "background must be a colour")])
def test_bad_options_are_clear_errors(tmp_path, args, msg):
    src = _write_photo(tmp_path / "a.png")
    result = runner.invoke(app, ["protect", str(src), "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and msg in result.output


def test_unknown_flag_is_an_error(tmp_path):
    result = runner.invoke(app, ["protect", "x.png", "-o", "o", "--max-iters", "3"])
    assert result.exit_code == 2


def test_models_and_methods_list(tmp_path):
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "mobilenet_v2" in r.output and "efficientnet_lite2" in r.output
    assert "facenet_casia" in r.output and "dlib" in r.output and "ssd_mobilenet_v2_coco" in r.output
    r = runner.invoke(app, ["methods"])
    assert r.exit_code == 0 and "levels" in r.output and "jnd" in r.output


def test_jnd_map_command(tmp_path):
    src = _write_photo(tmp_path / "a.png")
    r = runner.invoke(app, ["jnd-map", str(src), "-o", str(tmp_path / "map.png"), "--model", "chou"])
    assert r.exit_code == 0, r.output
    j = np.load(tmp_path / "map.npy")
    assert j.shape == (3, 120, 160) and 2.9 / 255 < j.min() and j.max() < 40 / 255


def test_face_task_reports_photos_without_a_face(tmp_path):
    src = _write_photo(tmp_path / "rocket.png", "rocket", (200, 300))
    result = runner.invoke(app, ["protect", "--task", "face", str(src), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "rocket.png: no face detected" in result.output
    assert not (tmp_path / "o" / "rocket.png").exists()
    assert json.loads((tmp_path / "o" / "report.json").read_text())["images"][0]["status"] == "no-face"
    page = (tmp_path / "o.report" / "report.html").read_text()  # one report page for every task
    assert "rocket.png" in page and "no face detected" in page


def test_task_and_gallery_options_are_checked(tmp_path):
    src = _write_photo(tmp_path / "a.png")
    r = runner.invoke(app, ["protect", "--task", "faces", str(src), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--task must be classify, face, detect, text, got 'faces'" in r.output
    r = runner.invoke(app, ["protect", "--gallery", str(tmp_path), str(src), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--gallery does not apply to --task classify" in r.output


def test_jpeg_output_uses_the_lossy_preset_and_the_saved_jpeg_fools_the_model(tmp_path, mobilenet):
    """levels' default (one level per value) does not survive JPEG; with --format jpg and no
    --preset, protect uses levels' lossy preset, and the success is judged on the JPEG file."""
    from jndkit.attacks import METHODS
    from jndkit.goals import Untargeted
    from jndkit.protect import ProtectConfig, Protector

    p = Protector(ProtectConfig.research(format="jpg", quality=90), victim=mobilenet)
    fast = METHODS["levels"].presets[METHODS["levels"].lossy_preset]
    assert p.method_for("jpg").params["max_levels"] == fast["max_levels"] == 2.0
    assert p.method_for("png").params["max_levels"] == 1.0
    src = _write_photo(tmp_path / "cat.png")
    result = runner.invoke(app, ["protect", str(src), "-o", str(tmp_path / "o"), "--format", "jpg",
                                 "--quality", "90", "--no-html", "--research"])
    assert result.exit_code == 0, result.output
    saved = tmp_path / "o" / "cat.jpg"
    with torch.no_grad():
        goal = Untargeted().bind(mobilenet(load_image(src).rgb[None]))
        assert bool(goal.reached(mobilenet(load_image(saved).rgb[None]))[0])


@pytest.mark.parametrize("opt", [["--background", "white"], ["--weights", "w.pt"]])
def test_options_that_do_not_apply_to_faces_are_errors(tmp_path, opt):
    src = _write_photo(tmp_path / "a.png")
    r = runner.invoke(app, ["protect", "--task", "face", str(src), "-o", str(tmp_path / "o"), *opt])
    assert r.exit_code == 2 and opt[0] in r.output and "--task face" in r.output
    assert not (tmp_path / "o").exists()


def test_face_budget_takes_a_jnd_model(tmp_path):
    """``--jnd`` sets the face panel's budget map; an unknown one is refused before any photo."""
    from jndkit.cli.protect import _face_task

    src = _write_photo(tmp_path / "a.png")
    task = _face_task([src], tmp_path / "direct", "dodge", None, None, None, None, 0, "png", 95, "none", None, False,
                      None, None, None, "chou")
    assert task.config_json()["jnd"] == "chou"
    r = runner.invoke(app, ["protect", "--task", "face", str(src), "-o", str(tmp_path / "o"), "--jnd", "nope"])
    assert r.exit_code == 2 and "JND model must be one of" in r.output, r.output
    assert not (tmp_path / "o").exists()
    r = runner.invoke(app, ["protect", "--task", "face", str(src), "-o", str(tmp_path / "o"), "--research",
                            "--jnd", "chou"])
    assert r.exit_code == 2 and "--jnd" in r.output


@pytest.mark.parametrize("goal,named,hint", [("targeted:notaclass", "'notaclass'", "did you mean"),
                                             ("targeted:espressso", "'espressso'", "did you mean: espresso"),
                                             ("untargeted:retriever", "'retriever'", "golden retriever"),
                                             ("targeted:1000", "class index 1000", "0..999")])
def test_unknown_goal_class_is_refused_before_any_work(tmp_path, goal, named, hint):
    src = _write_photo(tmp_path / "a.png")
    r = runner.invoke(app, ["protect", str(src), "-o", str(tmp_path / "o"), "--research", "--goal", goal])
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()
    assert len(line) == 1 and f"goal {goal!r}" in line[0] and named in line[0] and hint in line[0]
    assert not (tmp_path / "o").exists()  # refused up front: no output folder, no photo tried


def test_known_goal_class_names_pass_validation():
    from jndkit.protect import ProtectConfig

    for goal in ("targeted:Tabby", "targeted:golden_retriever", "untargeted:espresso", "targeted:999"):
        ProtectConfig.research(goal=goal).validate()
