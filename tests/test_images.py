import numpy as np
import pytest
import torch
from PIL import Image

from jndkit.errors import ImageError, OutputError
from jndkit.images import encode_image, find_images, load_image, output_path, quantize, save_image, to_uint8


class TestQuantize:
    def test_rounds_to_nearest_level_not_truncating(self):
        lv = 1 / 255
        x = torch.tensor([0.0, 0.49 * lv, 0.51 * lv, 0.9 * lv, 1.49 * lv, 1.51 * lv, 254.6 * lv, 1.0])
        expected = torch.tensor([0, 0, 1, 1, 1, 2, 255, 255]) / 255
        assert torch.equal(quantize(x), expected)

    def test_half_level_ties_round_half_to_even(self):
        lv = 1 / 255
        x = torch.tensor([0.5, 1.5, 2.5, 3.5], dtype=torch.float64) * lv
        assert torch.allclose(quantize(x) * 255, torch.tensor([0.0, 2.0, 2.0, 4.0], dtype=torch.float64))

    def test_clamps_out_of_range(self):
        assert torch.equal(quantize(torch.tensor([-0.3, 1.7])), torch.tensor([0.0, 1.0]))

    def test_idempotent_and_matches_png_roundtrip(self, tmp_path):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(3, 17, 23, generator=g)
        q = quantize(x)
        assert torch.equal(quantize(q), q)
        p = save_image(x, tmp_path / "a.png")
        assert torch.equal(load_image(p).rgb, q)

    def test_to_uint8_rounds(self):
        x = torch.full((3, 2, 2), 0.9 / 255)
        assert to_uint8(x).max() == 1


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


class TestLoad:
    def test_modes_become_rgb(self, tmp_path):
        g = np.random.default_rng(0)
        grey = (g.random((20, 30)) * 255).astype(np.uint8)
        p = _save(Image.fromarray(grey, "L"), tmp_path / "g.png")
        x = load_image(p).rgb
        assert x.shape == (3, 20, 30)
        assert torch.equal(x[0], x[1]) and torch.allclose(x[0] * 255, torch.from_numpy(grey).float())
        pal = Image.fromarray((g.random((20, 30, 3)) * 255).astype(np.uint8)).convert("P")
        assert load_image(_save(pal, tmp_path / "p.png")).rgb.shape == (3, 20, 30)
        cmyk = Image.fromarray((g.random((20, 30, 3)) * 255).astype(np.uint8)).convert("CMYK")
        assert load_image(_save(cmyk, tmp_path / "c.tiff")).rgb.shape == (3, 20, 30)

    def test_16bit_grey_keeps_depth(self, tmp_path):
        arr = np.full((10, 12), 32768, dtype=np.uint16)
        p = _save(Image.fromarray(arr), tmp_path / "d.png")
        x = load_image(p).rgb
        assert x.shape == (3, 10, 12)
        assert abs(float(x[0, 0, 0]) - 32768 / 65535) < 1e-6

    def test_alpha_kept_and_restored(self, tmp_path):
        rgba = np.zeros((12, 14, 4), np.uint8)
        rgba[..., 0] = 200
        rgba[..., 3] = np.arange(14, dtype=np.uint8)[None, :] * 18
        p = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")
        img = load_image(p)
        assert img.alpha is not None and img.alpha.shape == (12, 14)
        q = save_image(img.rgb, tmp_path / "out" / "a.png", alpha=img.alpha)
        back = np.asarray(Image.open(q))
        assert back.shape == (12, 14, 4) and np.array_equal(back[..., 3], rgba[..., 3])

    def test_exif_orientation_applied(self, tmp_path):
        arr = np.zeros((10, 20, 3), np.uint8)
        arr[:, :5] = 255  # white band on the left
        img = Image.fromarray(arr)
        exif = img.getexif()
        exif[0x0112] = 6  # rotate 90 CW when displayed
        p = tmp_path / "o.jpg"
        img.save(p, exif=exif.tobytes(), quality=100)
        x = load_image(p).rgb
        assert x.shape == (3, 20, 10)  # displayed upright: portrait
        assert float(x[:, :5, :].mean()) > 0.9  # band now on top

    @pytest.mark.parametrize(
        "make,reason",
        [
            (lambda p: p.write_text("hello, not an image"), "not an image"),
            (lambda p: p.write_bytes(encode_image(torch.rand(3, 64, 64), "jpg")[:600]), "truncated"),
            (lambda p: Image.new("RGB", (1, 1)).save(p, format="PNG"), "too small"),
        ],
    )
    def test_bad_files_name_the_file_and_reason(self, tmp_path, make, reason):
        p = tmp_path / "bad.jpg"
        make(p)
        with pytest.raises(ImageError, match=reason) as e:
            load_image(p)
        assert str(p) in str(e.value) and "\n" not in str(e.value)

    def test_missing_file(self, tmp_path):
        with pytest.raises(ImageError, match="no such file"):
            load_image(tmp_path / "nope.png")


class TestSave:
    def test_never_overwrites(self, tmp_path):
        p = save_image(torch.zeros(3, 8, 8), tmp_path / "x.png")
        before = p.read_bytes()
        with pytest.raises(OutputError, match="already exists"):
            save_image(torch.ones(3, 8, 8), p)
        assert p.read_bytes() == before
        assert [f.name for f in tmp_path.iterdir()] == ["x.png"]  # no temporary left behind

    def test_unwritable_folder(self, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(OutputError, match="cannot write"):
            save_image(torch.zeros(3, 8, 8), blocker / "x.png")

    def test_jpeg_quality_and_output_names(self, tmp_path):
        x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
        lo = save_image(x, tmp_path / "lo.jpg", quality=30).stat().st_size
        hi = save_image(x, tmp_path / "hi.jpg", quality=95).stat().st_size
        assert lo < hi
        assert output_path(tmp_path / "a" / "photo.JPG", tmp_path, "same").name == "photo.jpg"
        assert output_path(tmp_path / "photo.jpg", tmp_path, "png").name == "photo.png"

    def test_find_images_expands_folders(self, tmp_path):
        (tmp_path / "d" / ".hidden").mkdir(parents=True)
        for n in ["d/a.png", "d/b.txt", "d/.hidden/c.png", "e.txt"]:
            (tmp_path / n).write_bytes(b"")
        found = find_images([tmp_path / "d", tmp_path / "e.txt"])
        assert [f.name for f in found] == ["a.png", "e.txt"]
