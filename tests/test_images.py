import io
import os
import stat
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps, features

from jndkit import images as I
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

    def test_16bit_grey_rounds_to_8bit_levels(self, tmp_path):
        # issue 12 item 13: round(v * 255 / 65535), never the high byte (v >> 8)
        values = np.array([0, 384, 511, 32767, 32768, 65279, 65535], dtype=np.uint16)
        arr = np.tile(values, (10, 2))
        p = _save(Image.fromarray(arr), tmp_path / "d.png")
        img = load_image(p)
        x = img.rgb
        assert x.shape == (3, 10, 14)
        want = np.round(values / 257.0)  # [0, 1, 2, 127, 128, 254, 255]; v >> 8 gives [0, 1, 1, 127, 128, 254, 255]
        assert np.array_equal(np.round(x[0, 0, :7].numpy() * 255), want)
        assert torch.equal(x, torch.round(x * 255) / 255)  # on 8-bit levels
        assert img.bit_depth == 16 and img.grey and img.mode == "I;16"

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


# ---------------------------------------------------------------- issue 12: items 10, 11, 13, 14


def _write_png16(path, a: np.ndarray) -> None:
    """Minimal 16-bit PNG writer (RGB, RGBA or grey; filter 0): Pillow cannot write 16-bit RGB."""
    h, w = a.shape[:2]
    ctype = {3: 2, 4: 6}[a.shape[2]] if a.ndim == 3 else 0
    raw = b"".join(b"\x00" + a[r].astype(">u2").tobytes() for r in range(h))

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class TestDeepAndGrey:
    @pytest.mark.parametrize("channels", [3, 4])
    def test_16bit_rgb_png_is_rounded_not_cut(self, tmp_path, channels):
        a = np.random.default_rng(0).integers(0, 65536, (20, 30, channels), dtype=np.uint16)
        p = tmp_path / "rgb16.png"
        _write_png16(p, a)
        img = load_image(p)
        want = np.round(a / 257.0)  # v * 255 / 65535, rounded
        got = np.round(img.rgb.numpy().transpose(1, 2, 0) * 255)
        assert np.array_equal(got, want[:, :, :3])
        assert (np.asarray(Image.open(p).convert("RGB")) != want[:, :, :3]).mean() > 0.2  # Pillow cuts: ~27 % off
        assert img.bit_depth == 16 and "16-bit samples rounded to 8-bit levels" in img.notes
        if channels == 4:
            assert img.alpha is not None and np.array_equal(img.alpha, want[:, :, 3].astype(np.uint8))

    def test_16bit_rgb_tiff_is_rounded(self, tmp_path):
        import tifffile

        a = np.random.default_rng(1).integers(0, 65536, (16, 18, 3), dtype=np.uint16)
        p = tmp_path / "rgb16.tif"
        tifffile.imwrite(p, a)
        got = np.round(load_image(p).rgb.numpy().transpose(1, 2, 0) * 255)
        assert np.array_equal(got, np.round(a / 257.0))

    @pytest.mark.parametrize("orientation", range(1, 9))
    def test_orientation_of_deep_arrays_matches_pillow(self, orientation):
        arr = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
        im = Image.fromarray(arr)
        exif = im.getexif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        im.save(buf, format="PNG", exif=exif.tobytes())
        upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
        assert np.array_equal(I._orient(arr, orientation), upright)

    def test_greyscale_source_is_written_greyscale_when_channels_are_equal(self, tmp_path):
        grey = (np.random.default_rng(2).random((20, 24)) * 255).astype(np.uint8)
        src = _save(Image.fromarray(grey, "L"), tmp_path / "g.png")
        img = load_image(src)
        assert img.grey and img.mode == "L"
        out = save_image(img.rgb, tmp_path / "out" / "g.png", info=img.info)
        with Image.open(out) as back:
            assert back.mode == "L" and np.array_equal(np.asarray(back), grey)
        jpg = save_image(img.rgb, tmp_path / "out" / "g.jpg", info=img.info)
        assert Image.open(jpg).mode == "L"
        # a perturbation in colour (channels differ) must stay RGB, and an RGB source stays RGB
        x = img.rgb.clone()
        x[0, 0, 0] = min(1.0, float(x[0, 0, 0]) + 2 / 255)
        assert Image.open(save_image(x, tmp_path / "out" / "c.png", info=img.info)).mode == "RGB"
        assert Image.open(save_image(img.rgb, tmp_path / "out" / "n.png")).mode == "RGB"

    def test_greyscale_with_alpha_is_written_la(self, tmp_path):
        la = np.stack([np.full((12, 12), 90, np.uint8), np.arange(144, dtype=np.uint8).reshape(12, 12)], axis=2)
        src = _save(Image.fromarray(la, "LA"), tmp_path / "la.png")
        img = load_image(src)
        back = Image.open(save_image(img.rgb, tmp_path / "o.png", alpha=img.alpha, info=img.info))
        assert back.mode == "LA" and np.array_equal(np.asarray(back), la)


class TestUmask:
    @pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
    def test_saved_file_mode_follows_umask(self, tmp_path, umask, mode):
        old = os.umask(umask)
        try:
            p = save_image(torch.zeros(3, 8, 8), tmp_path / "x.png")
            q = save_image(torch.ones(3, 8, 8), p, overwrite=True)
        finally:
            os.umask(old)
        assert stat.S_IMODE(p.stat().st_mode) == mode and stat.S_IMODE(q.stat().st_mode) == mode


class TestFormats:
    def _frames(self, n: int) -> list[Image.Image]:
        return [Image.new("RGB", (16, 16), (40 * i, 100, 200)) for i in range(n)]

    @pytest.mark.parametrize("suffix,fmt", [(".gif", "GIF"), (".webp", "WEBP"), (".png", "PNG")])
    def test_animated_images_are_refused(self, tmp_path, suffix, fmt):
        p = tmp_path / ("anim" + suffix)
        first, *rest = self._frames(3)
        first.save(p, format=fmt, save_all=True, append_images=rest, duration=100, loop=0)
        assert Image.open(p).n_frames == 3
        with pytest.raises(ImageError, match=r"animated image with 3 frames; jndkit protects still images only") as e:
            load_image(p)
        assert str(p) in str(e.value)

    def test_multipage_tiff_is_refused_and_still_gif_loads(self, tmp_path):
        p = tmp_path / "pages.tif"
        first, *rest = self._frames(2)
        first.save(p, save_all=True, append_images=rest)
        with pytest.raises(ImageError, match="multi-page TIFF with 2 frames"):
            load_image(p)
        g = tmp_path / "still.gif"
        Image.new("RGB", (16, 16), (255, 0, 0)).save(g)
        x = load_image(g).rgb
        assert x.shape == (3, 16, 16) and float(x[0].mean()) > 0.95 and float(x[1:].max()) < 0.05

    def test_one_list_of_formats_for_folders_and_named_files(self, tmp_path):
        assert ".gif" in I.IMAGE_SUFFIXES
        assert (".avif" in I.IMAGE_SUFFIXES) == bool(features.check("avif"))
        names = ["a.gif", "b.png", "c.txt"] + (["d.avif"] if features.check("avif") else [])
        for n in names:
            (tmp_path / n).write_bytes(b"")
        assert [f.name for f in find_images([tmp_path])] == sorted(n for n in names if n != "c.txt")
        # a named file in a format outside the list (ICO) is refused by name, with the reason
        ico = tmp_path / "icon.ico"
        Image.new("RGB", (16, 16)).save(ico, format="ICO")
        with pytest.raises(ImageError, match="format ICO not supported"):
            load_image(ico)
        # GIF/AVIF sources are written as PNG with --format same (GIF's 256 colours would erase the change)
        assert output_path(tmp_path / "a.gif", tmp_path, "same").name == "a.png"

    @pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")
    def test_avif_decodes(self, tmp_path):
        p = tmp_path / "a.avif"
        Image.new("RGB", (16, 16), (0, 0, 255)).save(p, quality=100)
        x = load_image(p).rgb
        assert float(x[2].mean()) > 0.9 and float(x[0].max()) < 0.1


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _cmyk_profile() -> bytes:
    """A minimal ICC v2 CMYK profile (Pillow's ImageCms cannot create one; none ships in our packages).

    Deliberately unlike a press profile: cyan ink removes *blue*, magenta red, yellow green
    (corners R = (1-m)(1-k), G = (1-y)(1-k), B = (1-c)(1-k)), so a decoder that ignores the profile
    (plain CMYK -> RGB: cyan removes red) gives clearly different colours. PCS XYZ (D50), A2B0 as a
    lut16 with 2 grid points per ink, corner XYZ from the Bradford-adapted sRGB D50 matrix.
    """
    m_srgb = np.array([[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169],
                       [0.0139322, 0.0971045, 0.7141733]])
    clut: list[int] = []
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    rgb = np.array([(1 - m) * (1 - k), (1 - y) * (1 - k), (1 - c) * (1 - k)], float)
                    clut += [min(65535, round(float(v) * 32768)) for v in m_srgb @ rgb]
    lut = b"mft2" + b"\0" * 4 + bytes([4, 3, 2, 0]) + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut += struct.pack(">HH", 2, 2) + struct.pack(">8H", *([0, 65535] * 4))
    lut += struct.pack(f">{len(clut)}H", *clut) + struct.pack(">6H", *([0, 65535] * 3))
    text = b"jndkit test CMYK\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + struct.pack(">II", 0, 0) + b"\0" * 70
    wtpt = b"XYZ " + b"\0" * 4 + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    cprt = b"text" + b"\0" * 4 + b"test data\0"
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", cprt), (b"A2B0", lut)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        body += b"\0" * (-(offset + len(body)) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = struct.pack(">I", offset + len(body)) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"prtrCMYKXYZ "
    header += b"\0" * 12 + b"acsp" + b"\0" * 28 + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    return header + b"\0" * (128 - len(header)) + struct.pack(">I", len(tags)) + table + body


class TestCmykIcc:
    def test_cmyk_jpeg_is_converted_with_its_profile_and_the_profile_not_copied(self, tmp_path):
        icc = _cmyk_profile()
        inks = np.zeros((1, 5, 4), np.uint8)
        for i in range(4):
            inks[0, i + 1, i] = 255  # paper, C, M, Y, K
        cmyk = Image.fromarray(inks, "CMYK").resize((80, 16), Image.NEAREST)
        p = tmp_path / "cmyk.jpg"
        cmyk.save(p, quality=100, icc_profile=icc)
        assert Image.open(p).mode == "CMYK" and Image.open(p).info["icc_profile"] == icc
        img = load_image(p)
        centres = np.round(img.rgb[:, 8, 8::16].numpy().T * 255)  # one pixel inside each patch
        want = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255], [0, 0, 0]])
        assert np.abs(centres - want).max() <= 6, centres  # profile colours: cyan ink -> yellow here
        naive = np.asarray(Image.open(p).convert("RGB"))[8, 8::16].astype(int)
        assert np.abs(naive - want).max() > 200  # plain conversion: cyan ink -> cyan
        assert "icc_profile" not in img.info and "CMYK converted to sRGB with its ICC profile" in img.notes
        for suffix in (".png", ".jpg", ".tif"):
            out = save_image(img.rgb, tmp_path / ("out" + suffix), info=img.info)
            with Image.open(out) as back:
                assert back.mode == "RGB"
                assert back.info.get("icc_profile") in (None, b"")  # no CMYK profile in an RGB file

    def test_rgb_profile_is_kept_and_mismatched_profile_dropped(self, tmp_path):
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        p = tmp_path / "rgb.png"
        Image.new("RGB", (16, 16), (10, 20, 30)).save(p, icc_profile=srgb)
        img = load_image(p)
        assert img.info["icc_profile"] == srgb
        assert Image.open(save_image(img.rgb, tmp_path / "o.png", info=img.info)).info["icc_profile"] == srgb
        # a CMYK profile handed in by a caller is never embedded in an RGB file
        bad = save_image(img.rgb, tmp_path / "bad.png", info={"icc_profile": _cmyk_profile()})
        assert Image.open(bad).info.get("icc_profile") is None
