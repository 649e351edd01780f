"""Reliability defects of issue 12: transparent photos judged as people see them (item 4),
``jnd-map`` never overwriting (item 7), Ctrl-C and progress lines of ``protect`` (item 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
    from jndkit.protect import ImageRecord

    img = load_image(_transparent_photo(tmp_path / "cat.png", "chelsea", (96, 80)))
    p = Protector(ProtectConfig.research(upload="jpeg90"), victim=mobilenet)
    rec = ImageRecord(input="cat.png")
    p._measure(rec, img.rgb, img.rgb, img.alpha)
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
