"""Images with private-looking text for the text task: renders with Pillow and the DejaVu fonts
(Debian ``fonts-dejavu-core``) and scikit-image's ``text()`` and ``page()``. Every name, address,
number and e-mail address is fictitious.

:func:`text_samples` gives ``{name: [3,H,W] float in [0,1]}`` (8-bit values), deterministically;
:func:`write_text_samples` writes them as PNG files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError, OutputError

__all__ = ["FONT_DIRS", "font", "render_lines", "text_samples", "write_text_samples"]

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/local/share/fonts")
"""Where the DejaVu fonts are looked for (Debian's ``fonts-dejavu-core`` installs the first)."""

INK = (25, 25, 35)
PAPER = (250, 248, 242)


def font(size: int, style: str = "Sans") -> ImageFont.FreeTypeFont:
    """DejaVu ``style`` (``Sans``, ``Sans-Bold``, ``Serif``, ``SansMono``) at ``size`` pixels.

    Raises:
        InputError: the font file is not installed (Debian: ``apt-get install fonts-dejavu-core``).
    """
    name = f"DejaVu{style}.ttf"
    for d in FONT_DIRS:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return ImageFont.truetype(p, size)
    raise InputError(f"font {name} not found in {', '.join(FONT_DIRS)} (Debian: apt-get install fonts-dejavu-core)")


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).float() / 255.0


def render_lines(lines: list[str], size: int = 22, width: int | None = None, style: str = "Sans",
                 ink: tuple[int, int, int] = INK, paper: tuple[int, int, int] = PAPER,
                 margin: int = 12, spacing: float = 1.6) -> torch.Tensor:
    """Lines of text on plain paper, ``[3,H,W]`` in [0,1]; the width fits the longest line unless given."""
    f = font(size, style)
    step = int(size * spacing)
    w = width or margin * 2 + max(int(f.getlength(t)) for t in lines)
    img = Image.new("RGB", (w, margin * 2 + step * len(lines)), paper)
    d = ImageDraw.Draw(img)
    for i, t in enumerate(lines):
        d.text((margin, margin + i * step), t, fill=ink, font=f)
    return _tensor(img)


def _letter() -> torch.Tensor:
    return render_lines(["Ms Anna Keller", "12 Birch Lane", "Oakville OV3 7QT", "",
                         "Dear Ms Keller, your account 88-41-07", "is now closed."], size=20)


def _letter2() -> torch.Tensor:
    return render_lines(["Dr Jonas Brandt", "Flat 4, 9 Mill Road", "Riverton RT1 2AB", "Ref: PX-5531-K"],
                        size=22, style="Serif")


def _chat() -> torch.Tensor:
    img = Image.new("RGB", (360, 230), (236, 229, 221))
    d = ImageDraw.Draw(img)
    f = font(17)
    bubbles = [(12, "Hi Tom, new number: 0171 555 0199", (255, 255, 255)),
               (70, "Thanks! My address is 7 Elm Court", (220, 248, 198)),
               (128, "PIN for the door is 4482", (255, 255, 255)),
               (186, "See you at 6, Lena", (220, 248, 198))]
    for y, t, c in bubbles:
        x = 10 if c == (255, 255, 255) else 360 - 20 - int(f.getlength(t))
        d.rounded_rectangle((x - 6, y - 6, x + int(f.getlength(t)) + 6, y + 30), radius=8, fill=c)
        d.text((x, y), t, fill=(20, 20, 20), font=f)
    return _tensor(img)


def _card() -> torch.Tensor:
    img = Image.new("RGB", (380, 220), (30, 70, 140))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((6, 6, 374, 214), radius=16, fill=(35, 85, 160))
    d.text((24, 22), "NORTHWIND BANK", fill=(240, 240, 250), font=font(20, "Sans-Bold"))
    d.text((24, 100), "4111 2345 6789 0123", fill=(245, 245, 245), font=font(26, "SansMono"))
    d.text((24, 150), "VALID 09/29", fill=(230, 230, 240), font=font(16))
    d.text((24, 178), "MARIA LOPEZ", fill=(245, 245, 245), font=font(20))
    return _tensor(img)


def _badge() -> torch.Tensor:
    img = Image.new("RGB", (300, 200), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, 300, 50), fill=(200, 40, 40))
    d.text((16, 12), "VISITOR", fill=(255, 255, 255), font=font(24, "Sans-Bold"))
    d.text((16, 70), "Peter Novak", fill=INK, font=font(28, "Sans-Bold"))
    d.text((16, 120), "Acme Labs, Level 3", fill=INK, font=font(18))
    d.text((16, 155), "ID 20-7731", fill=INK, font=font(18))
    return _tensor(img)


def _email() -> torch.Tensor:
    return render_lines(["From: sara.holm@example.org", "To: j.pike@example.net",
                         "Subject: lease for 31 Quay Street", "Call me on 020 7946 0321"], size=18)


def _receipt() -> torch.Tensor:
    return render_lines(["CORNER SHOP", "Card **** 5521", "Total 23.40", "Member: K. Osei"], size=20,
                        style="SansMono", paper=(245, 245, 238))


def _plate() -> torch.Tensor:
    img = Image.new("RGB", (300, 90), (40, 40, 40))
    d = ImageDraw.Draw(img)
    d.rectangle((10, 10, 290, 80), fill=(250, 210, 40))
    d.text((32, 22), "KX21 RTD", fill=(10, 10, 10), font=font(38, "Sans-Bold"))
    return _tensor(img)


def _on_photo(name: str, lines: list[tuple[int, int, str, int]], fill: tuple[int, int, int],
              crop: tuple[int, int, int, int] | None = None) -> Callable[[], torch.Tensor]:
    def make() -> torch.Tensor:
        from skimage import data

        arr = getattr(data, name)()
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        img = Image.fromarray(arr[..., :3].astype(np.uint8))
        if crop is not None:
            img = img.crop(crop)
        d = ImageDraw.Draw(img)
        for x, y, t, s in lines:
            d.text((x, y), t, fill=fill, font=font(s, "Sans-Bold"))
        return _tensor(img)

    return make


def _skimage(name: str, crop: tuple[int, int, int, int] | None = None) -> Callable[[], torch.Tensor]:
    def make() -> torch.Tensor:
        from skimage import data

        img = Image.fromarray(getattr(data, name)())
        if crop is not None:
            img = img.crop(crop)
        return _tensor(img)

    return make


_SAMPLES: dict[str, Callable[[], torch.Tensor]] = {
    "letter": _letter,
    "letter2": _letter2,
    "chat": _chat,
    "card": _card,
    "badge": _badge,
    "email": _email,
    "receipt": _receipt,
    "plate": _plate,
    "note": lambda: render_lines(["Nina Weber", "born 14.03.1987"], size=26),
    "sticky": lambda: render_lines(["wifi: GreenHouse42", "pass: tulip-7-moon"], size=20, paper=(255, 245, 160)),
    "astronaut": _on_photo("astronaut", [(20, 20, "Eileen M. Collins", 28), (20, 60, "Houston TX 77058", 24)],
                           (255, 255, 255), crop=(0, 0, 512, 256)),
    "coffee": _on_photo("coffee", [(30, 330, "Table 12 - Mr Ito", 30)], (255, 255, 255), crop=(0, 0, 600, 400)),
    "chelsea": _on_photo("chelsea", [(20, 240, "Chelsea, 5 Ash Row", 24)], (255, 255, 255)),
    "text": _skimage("text"),
    "page": _skimage("page"),
    "rocket": _on_photo("rocket", [(30, 380, "Launch code 7745", 26)], (255, 255, 255)),
}


def text_samples(names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The sample images by name (all 16 by default), ``[3,H,W]`` float in [0,1] with 8-bit values.

    Raises:
        InputError: an unknown sample name.
    """
    keys = list(_SAMPLES) if names is None else list(names)
    unknown = [k for k in keys if k not in _SAMPLES]
    if unknown:
        raise InputError(f"unknown text sample(s) {unknown}; available: {', '.join(_SAMPLES)}")
    return {k: _SAMPLES[k]() for k in keys}


def write_text_samples(out_dir: str | os.PathLike[str], names: list[str] | None = None) -> list[Path]:
    """Write the samples as ``<out_dir>/<name>.png``; returns the paths.

    Raises:
        OutputError: the folder cannot be created or a file cannot be written.
    """
    d = Path(out_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(str(d), f"cannot create the folder ({e.strerror})") from None
    paths = []
    for k, x in text_samples(names).items():
        p = d / f"{k}.png"
        arr = torch.round(x.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        try:
            Image.fromarray(arr).save(p)
        except OSError as e:
            raise OutputError(str(p), f"cannot write ({e.strerror})") from None
        paths.append(p)
    return paths
