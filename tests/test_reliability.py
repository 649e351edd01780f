"""Reliability defects of issue 12: transparent photos judged as people see them (item 4),
``jnd-map`` never overwriting (item 7), Ctrl-C and progress lines of ``protect`` (item 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from jndkit.cli import app
from jndkit.errors import InputError
from jndkit.goals import Untargeted
from jndkit.images import load_image
from jndkit.protect import AlphaComposite, ProtectConfig, Protector, parse_backgrounds
from jndkit.samples import sample_array

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def _transparent_photo(path: Path, name: str = "coffee", size: tuple[int, int] = (160, 120)) -> Path:
    """A real photo made transparent: alpha falls from 255 on the left to 40 on the right."""
    rgb = np.asarray(Image.fromarray(sample_array(name)).resize(size, Image.LANCZOS))
    alpha = np.tile(np.linspace(255, 40, size[0]).round().astype(np.uint8), (size[1], 1))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return path


def _pillow_composite(path: Path, colour: tuple[int, int, int]) -> torch.Tensor:
    """``[1,3,H,W]``: the file flattened on ``colour`` by Pillow (what a viewer shows), independent of jndkit."""
    with Image.open(path) as im:
        rgba = im.convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (*colour, 255)), rgba).convert("RGB")
    return torch.from_numpy(np.array(flat)).permute(2, 0, 1).float()[None] / 255.0


def _margin_on(mobilenet, clean: torch.Tensor, other: torch.Tensor) -> float:
    with torch.no_grad():
        goal = Untargeted().bind(mobilenet(clean))
        return float(goal.margin(mobilenet(other))[0])


# ------------------------------------------------------------------------------------ item 4


def test_transparent_photo_is_protected_as_seen_on_white_and_on_black(tmp_path, mobilenet):
    src = _transparent_photo(tmp_path / "coffee.png")
    out = tmp_path / "out"
    out.mkdir()
    p = Protector(ProtectConfig.research(max_iter=300), victim=mobilenet)
    rec = p.protect_file(src, out)
    assert rec.status == "protected", rec.error
    saved = out / "coffee.png"
    assert np.array_equal(load_image(saved).alpha, load_image(src).alpha)  # the file keeps its alpha
    for colour in (WHITE, BLACK):  # judged here by Pillow's own compositing, not jndkit's
        m = _margin_on(mobilenet, _pillow_composite(src, colour), _pillow_composite(saved, colour))
        assert m > 0.05, (colour, m)
    assert rec.clean_top5[0][0] == mobilenet.predict(_pillow_composite(src, WHITE))[0][0][0]

    # what the old code did: attack the colour channels alone and call that protected. The same
    # photo, opaque, is protected, yet once it gets its alpha back the white composite is not fooled
    opaque = tmp_path / "opaque" / "coffee.png"
    opaque.parent.mkdir()
    Image.open(src).convert("RGB").save(opaque)
    out2 = tmp_path / "out2"
    out2.mkdir()
    assert p.protect_file(opaque, out2).status == "protected"
    rgb_only = np.asarray(Image.open(out2 / "coffee.png"))
    again = tmp_path / "again.png"
    Image.fromarray(np.dstack([rgb_only, load_image(src).alpha]), "RGBA").save(again)
    assert _margin_on(mobilenet, _pillow_composite(src, WHITE), _pillow_composite(again, WHITE)) < 0.05


def test_composite_victim_stacks_one_row_per_background_and_matches_pillow(tmp_path, mobilenet):
    from jndkit.victims import PanelVictim

    src = _transparent_photo(tmp_path / "cat.png", "chelsea", (96, 80))
    img = load_image(src)
    backgrounds = parse_backgrounds("white, #1e90ff")
    assert backgrounds == [("white", (1.0, 1.0, 1.0)), ("#1e90ff", (30 / 255, 144 / 255, 1.0))]
    v = AlphaComposite(mobilenet, img.alpha, backgrounds)
    with torch.no_grad():
        out = v(img.rgb[None])
        assert out.shape == (1, 2, 1000)
        for k, colour in enumerate((WHITE, (30, 144, 255))):
            flat = _pillow_composite(src, colour)
            assert torch.equal(v.composites(img.rgb[None])[k], flat)  # 8-bit composite, to the level
            assert torch.allclose(out[:, k], mobilenet(flat), atol=1e-4)
        panel = AlphaComposite(PanelVictim([mobilenet]), img.alpha, backgrounds)
        assert panel(img.rgb[None]).shape == (1, 2, 1000)
        small = torch.nn.functional.interpolate(img.rgb[None], scale_factor=0.75, mode="area")
        assert v(small).shape == (1, 2, 1000)  # after a resizing upload transform the alpha follows
    p = Protector(ProtectConfig.research(background="white, #1e90ff"), victim=mobilenet)
    assert isinstance(p.victim_for(img.alpha), AlphaComposite)
    assert p.victim_for(np.full((80, 96), 255, np.uint8)) is mobilenet  # opaque alpha: judged as it is
    assert p.victim_for(None) is mobilenet
    assert type(p.goal(p.victim_for(img.alpha))).__name__ == "PanelGoal"  # every composite must be fooled


def test_protection_matrix_has_a_row_per_model_and_background(tmp_path, mobilenet):
    from jndkit.pipeline import Attempt
    from jndkit.protect import ImageRecord

    img = load_image(_transparent_photo(tmp_path / "cat.png", "chelsea", (96, 80)))
    p = Protector(ProtectConfig.research(upload="jpeg90"), victim=mobilenet)
    rec = ImageRecord(input="cat.png")
    assert p.judge(Attempt(img.rgb, alpha=img.alpha), img.rgb, img.rgb, rec) is False  # the clean photo
    assert rec.matrix is not None and not any(c["changed"] for c in rec.matrix["cells"])
    assert rec.matrix is not None and rec.matrix["models"] == ["mobilenet_v2 on white", "mobilenet_v2 on black"]


def test_output_without_alpha_is_the_photo_flattened_on_the_first_background(tmp_path, mobilenet):
    from jndkit.metrics import psnr

    src = _transparent_photo(tmp_path / "coffee.png")
    out = tmp_path / "out"
    out.mkdir()
    rec = Protector(ProtectConfig.research(format="jpg", quality=95), victim=mobilenet).protect_file(src, out)
    assert rec.status == "protected", rec.error
    saved = load_image(out / "coffee.jpg")
    assert saved.alpha is None
    white = _pillow_composite(src, WHITE)
    assert float(psnr(white, saved.rgb[None])[0]) > 38  # the white composite, not the raw colour channels
    assert float(psnr(_pillow_composite(src, BLACK), saved.rgb[None])[0]) < 20
    assert _margin_on(mobilenet, white, saved.rgb[None]) > 0.05


@pytest.mark.parametrize("spec", ["notacolour", "", " , "])
def test_bad_background_is_refused(spec):
    with pytest.raises(InputError, match="background"):
        ProtectConfig(background=spec).validate()


# ------------------------------------------------------------------------------------ item 7

runner = CliRunner()


def _photo(path: Path, name: str = "chelsea", size: tuple[int, int] = (160, 120)) -> Path:
    Image.fromarray(sample_array(name)).resize(size, Image.LANCZOS).save(path)
    return path


def test_jnd_map_into_an_existing_folder_uses_the_image_name(tmp_path):
    from jndkit.perception import jnd_map

    src = _photo(tmp_path / "cat.png")
    folder = tmp_path / "maps"
    folder.mkdir()
    r = runner.invoke(app, ["jnd-map", str(src), "-o", str(folder), "--model", "chou"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in folder.iterdir()) == ["cat.npy", "cat.png"]
    assert not (tmp_path / "maps.png").exists()
    raw = np.load(folder / "cat.npy")
    assert np.allclose(raw, jnd_map(load_image(src).rgb[None], "chou")[0].numpy(), atol=1e-6)
    png = np.asarray(Image.open(folder / "cat.png")).astype(np.float64)
    want = np.clip(raw[0] * 255.0 / 20.0, 0, 1) * 255.0  # 20 grey levels of threshold = white
    assert np.abs(png[:, :, 0] - want).max() <= 0.5 + 1e-6


@pytest.mark.parametrize("existing", ["map.png", "map.npy"])
def test_jnd_map_never_overwrites_and_names_the_file(tmp_path, existing):
    src = _photo(tmp_path / "cat.png")
    (tmp_path / existing).write_bytes(b"mine")
    r = runner.invoke(app, ["jnd-map", str(src), "-o", str(tmp_path / "map.png"), "--model", "chou"])
    assert r.exit_code == 1
    assert str(tmp_path / existing) in r.output and "already exists" in r.output
    assert (tmp_path / existing).read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cat.png", existing])  # nothing else written


# ------------------------------------------------------------------------------------ item 15


def _three_photos(folder: Path) -> Path:
    folder.mkdir()
    _photo(folder / "a.png", "chelsea")
    _photo(folder / "b.png", "coffee")
    _photo(folder / "c.png", "astronaut", (128, 128))
    return folder


def test_ctrl_c_says_what_is_finished_and_the_resume_command_works(tmp_path, monkeypatch):
    import shlex

    src = _three_photos(tmp_path / "in")
    out = tmp_path / "out"
    import jndkit.pipeline.run as pipeline_run

    real = pipeline_run.protect_one
    calls = []

    def interrupted_on_the_second(task, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task, path, *args, **kwargs)

    monkeypatch.setattr(pipeline_run, "protect_one", interrupted_on_the_second)
    args = ["protect", str(src), "--output", str(out), "--research", "--max-iter", "150", "--no-html"]
    r = runner.invoke(app, args)
    assert r.exit_code == 130, r.output
    lines = [ln for ln in r.output.splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and "1/3 photos finished (1 protected" in lines[0], r.output
    command = lines[0].split("resume with: ", 1)[1]
    words = shlex.split(command)
    assert words[:2] == ["jndkit", "protect"] and words[-1] == "--resume"
    assert sorted(words[2:-1]) == sorted(args[1:])  # every argument and option given, nothing else
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "report.json"]  # nothing half-done left

    monkeypatch.setattr(pipeline_run, "protect_one", real)
    again = runner.invoke(app, words[1:])
    assert again.exit_code == 0, again.output
    assert "2/3 protected, 1 skipped" in again.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png", "report.json"]


def test_resume_command_keeps_flags_and_quotes_paths(tmp_path, monkeypatch):
    import shlex

    src = tmp_path / "my photos"
    src.mkdir()
    _photo(src / "a b.png")
    import jndkit.pipeline.run as pipeline_run

    monkeypatch.setattr(pipeline_run, "protect_one", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    r = runner.invoke(app, ["protect", str(src / "a b.png"), "-o", str(tmp_path / "o"), "--research", "--no-html",
                            "--background", "grey", "--seed", "3"])
    assert r.exit_code == 130
    words = shlex.split(r.output.split("resume with: ", 1)[1].strip())
    assert str(src / "a b.png") in words and "--no-html" in words and words[words.index("--background") + 1] == "grey"
    assert words[words.index("--seed") + 1] == "3" and "0/1 photos finished" in r.output


def test_one_plain_line_per_photo_when_stderr_is_not_a_terminal(tmp_path):
    src = _three_photos(tmp_path / "in")
    r = runner.invoke(app, ["protect", str(src), "-o", str(tmp_path / "out"), "--research", "--max-iter", "150",
                            "--no-html"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("[")]
    assert [ln.split(" ", 1)[0] for ln in lines] == ["[1/3]", "[2/3]", "[3/3]"]
    assert [ln.split()[2] for ln in lines] == ["a.png:", "b.png:", "c.png:"]
    assert "\x1b[" not in r.output  # plain text: no terminal codes in a log


def test_time_left_comes_from_seconds_per_finished_photo(monkeypatch):
    from jndkit.cli.common import PhotoClock

    clock = PhotoClock()
    clock.start -= 30.0  # two photos took 30 s
    assert clock.left(2, 10) == "about 2:00 left"  # 15 s per photo, 8 to go
    assert clock.left(0, 10) == "time left: after the first photo"
    assert clock.left(10, 10) == ""


def test_outputs_carry_no_exif_or_gps_as_the_readme_says(tmp_path, mobilenet):
    src = tmp_path / "gps.jpg"
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0132] = "2026:01:01 12:00:00"  # DateTime
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 30.0)  # GPSLatitude
    Image.fromarray(sample_array("chelsea")).resize((160, 120), Image.LANCZOS).save(src, exif=exif, quality=95)
    with Image.open(src) as im:
        assert im.getexif()[0x010F] == "PhoneMaker" and im.getexif().get_ifd(0x8825)  # the input has them
    out = tmp_path / "out"
    out.mkdir()
    for fmt in ("png", "jpg"):
        rec = Protector(ProtectConfig.research(format=fmt), victim=mobilenet).protect_file(src, out)
        assert rec.status == "protected", rec.error
        with Image.open(out / f"gps.{fmt}") as im:
            assert len(im.getexif()) == 0 and "exif" not in im.info


def test_subclasses_with_the_old_protect_tensor_signature_still_protect_opaque_photos(tmp_path, mobilenet):
    """benchmarks/bench_large.py and tests/test_proxy.py override protect_tensor(x, out_fmt, progress)
    and judge(attempt, clean, saved, record): an opaque photo must not pass them the alpha."""
    seen = []

    class Old(Protector):
        def protect_tensor(self, x, out_fmt="png", progress=None):  # type: ignore[no-untyped-def, override]
            seen.append("attack")
            return super().protect_tensor(x, out_fmt, progress)

        def judge(self, attempt, clean, saved, record):  # type: ignore[no-untyped-def, override]
            seen.append("judge")
            return super().judge(attempt, clean, saved, record)

    out = tmp_path / "out"
    out.mkdir()
    rec = Old(ProtectConfig.research(), victim=mobilenet).protect_file(_photo(tmp_path / "a.png"), out)
    assert rec.status == "protected" and seen == ["attack", "judge"], rec.error


def test_ctrl_c_in_face_protection_says_how_to_resume(tmp_path, monkeypatch):
    import shlex

    import jndkit.pipeline.run as pipeline_run

    def interrupted(task, src, dst, progress=None):  # type: ignore[no-untyped-def]
        assert task.name == "face"
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_run, "protect_one", interrupted)
    src = _photo(tmp_path / "me.png")
    r = runner.invoke(app, ["protect", "--task", "face", str(src), "-o", str(tmp_path / "o"), "--goal", "hide"])
    assert r.exit_code == 130, r.output
    assert "interrupted: 0/1 photos finished" in r.output
    words = shlex.split(r.output.split("resume with: ", 1)[1].strip())
    assert words[:2] == ["jndkit", "protect"] and words[-1] == "--resume"
    assert words[words.index("--task") + 1] == "face" and words[words.index("--goal") + 1] == "hide"


# ---------------------------------------------------------------------------- items 3, 6, 7, 9: the run's files
def _photo(path: Path, name: str = "chelsea", size: tuple[int, int] = (96, 72)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample_array(name)).resize(size, Image.LANCZOS).save(path)
    return path


def test_output_mirrors_the_input_tree_so_same_names_do_not_collide(tmp_path):
    from jndkit.protect import protect_paths

    src = tmp_path / "in"
    _photo(src / "a.png")
    _photo(src / "sub" / "a.png", "coffee")
    recs = list(protect_paths([src], tmp_path / "out", ProtectConfig.research()))
    assert sorted(r.status for r in recs) == ["protected", "protected"]
    assert (tmp_path / "out" / "a.png").exists() and (tmp_path / "out" / "sub" / "a.png").exists()


def test_two_inputs_with_one_output_name_are_refused_up_front(tmp_path):
    from jndkit.protect import protect_paths

    a = _photo(tmp_path / "in" / "a.png")
    b = _photo(tmp_path / "in" / "a.jpg", "coffee")
    with pytest.raises(InputError, match=r"a\.jpg and .*a\.png|a\.png and .*a\.jpg"):
        list(protect_paths([a, b], tmp_path / "out", ProtectConfig.research()))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_same_input_twice_is_protected_once(tmp_path):
    from jndkit.protect import protect_paths, summarise

    a = _photo(tmp_path / "in" / "a.png")
    recs = list(protect_paths([a, tmp_path / "in", a], tmp_path / "out", ProtectConfig.research()))
    assert [r.status for r in recs] == ["protected"]
    assert summarise(recs)["protected"] == 1


def test_report_is_the_truth_of_the_folder_after_resume(tmp_path):
    import json

    from jndkit.protect import protect_paths

    src = tmp_path / "in"
    _photo(src / "a.png")
    _photo(src / "b.png", "coffee")
    list(protect_paths([src], tmp_path / "out", ProtectConfig.research()))
    (tmp_path / "out" / "b.png").unlink()  # the user removed one output
    recs = list(protect_paths([src], tmp_path / "out", ProtectConfig.research(), resume=True))
    assert [r.status for r in recs] == ["skipped", "protected"]
    items = json.loads((tmp_path / "out" / "report.json").read_text())["images"]
    assert [(Path(i["input"]).name, i["status"]) for i in items] == [("a.png", "protected"), ("b.png", "protected")]
    from jndkit.report import write_html_report

    page = write_html_report(tmp_path / "out", recs).read_text()
    assert "2/2 photos protected" in page and "output exists" not in page


def test_a_report_json_jndkit_did_not_write_is_never_replaced(tmp_path):
    from jndkit.errors import OutputError
    from jndkit.protect import protect_paths

    a = _photo(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text('{"mine": 1}')
    with pytest.raises(OutputError, match="not a jndkit report"):
        list(protect_paths([a], tmp_path / "out", ProtectConfig.research()))
    assert (tmp_path / "out" / "report.json").read_text() == '{"mine": 1}'


def test_an_empty_input_folder_creates_no_output_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["protect", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--research"])
    assert r.exit_code == 2 and "no images found" in r.output
    assert not (tmp_path / "out").exists()
