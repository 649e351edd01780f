"""DMV-JND-NET: the hybrid convolutional encoder-decoder ``E`` of seed 003 (Fig. 3-4, eq. 3).

``e = E(x, c)`` (eq. 3): the photo ``x`` ``[B,3,H,W]`` stacked with its merged CAM
``c`` ``[B,1,H,W]`` (the paper's *s* operation) goes through

* an encoder of ``3x3`` convolutions (zero padding 1, normalisation, ReLU) with
  ``2x2`` max pooling -- Fig. 4's "convolution plus pooling" part, robust features
  as in denoising auto-encoders -- down to 1/8 of the input size;
* a decoder of large-stride transposed convolutions (stride 2 then stride 4)
  back to full size -- Fig. 4's "large stride deconvolution" part;
* a ``3x3`` output convolution over the decoded features concatenated with the
  input ``(x, c)`` so that the JND can follow image detail.

The figure's exact filter counts are not in the text; this version keeps the
layout with ``width`` filters (16 by default, ~60 k parameters) so it trains on a CPU.

Normalisation: Fig. 4 uses batch normalisation. Here each BN is a ``GroupNorm``
(4 groups): with BN, a net trained for a few hundred steps behaves differently in eval
mode (running statistics) than in training, so labels kept during training were lost at
use; and in training mode an image's JND would depend on its batch companions.

The raw output ``r`` ``[B,3,H,W]`` is bounded by :func:`bounded_perturbation`::

    t = amplitude * tanh(r)                       # in (-amplitude, amplitude)
    e = t * (1 - x)   where t >= 0                # never above white
    e = t * x         where t <  0                # never below black

so ``x + e`` always stays in [0,1] and no clipping removes part of ``e`` (the
paper adds ``e`` to a normalised image and never says how it keeps ``x + e``
displayable; jndkit counts a result only as a saved 8-bit image, so ``e`` must
survive the clip).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError


def bounded_perturbation(r: torch.Tensor, x: torch.Tensor, amplitude: float = 1.0) -> torch.Tensor:
    """Map an unbounded ``r`` ``[B,3,H,W]`` to ``e`` with ``x + e`` in [0,1] (see module docstring).

    ``amplitude`` in (0, 1] caps ``|e|`` at that fraction of the room to black or white.
    ``r = 0`` gives ``e = 0``.
    """
    if not 0 < amplitude <= 1:
        raise InputError(f"amplitude must be in (0, 1], got {amplitude}")
    t = amplitude * torch.tanh(r)
    return torch.where(t >= 0, t * (1.0 - x), t * x)


def _norm(ch: int) -> nn.Module:
    # GroupNorm, not the paper's BatchNorm: the same in training and use, and an image's JND
    # never depends on the other images of its batch (see the module docstring).
    return nn.GroupNorm(min(4, ch), ch)


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(cout), nn.ReLU(inplace=True))


def _deconv(cin: int, cout: int, stride: int) -> nn.Sequential:
    # kernel 2*stride, padding stride/2: exact upsampling by `stride`, overlapping kernels (less checkerboard)
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 2 * stride, stride=stride, padding=stride // 2, bias=False),
        _norm(cout),
        nn.ReLU(inplace=True),
    )


class DMVJNDNet(nn.Module):
    """Encoder-decoder ``E(x, c) -> e`` (eq. 3) of the DMV-JND-NET.

    Args:
        width: filters of the first encoder stage (then ``2*width``, ``4*width``).
        amplitude: bound of :func:`bounded_perturbation` (1 = anything up to black/white).
        init_scale: standard deviation of the output convolution's initial weights; small so
            that ``e`` starts near 0 and every clean label is kept at step 0.

    Input: ``x`` ``[B,3,H,W]`` in [0,1] and ``c`` ``[B,1,H,W]`` in [0,1], any ``H,W``
    (reflect-padded to a multiple of 8 inside). Output: ``e`` ``[B,3,H,W]`` with ``x+e`` in [0,1].
    Initialisation uses the global torch RNG; :func:`make_jnd_net` seeds it without side effects.
    """

    def __init__(self, width: int = 16, amplitude: float = 1.0, init_scale: float = 1e-3) -> None:
        super().__init__()
        if width < 1:
            raise InputError(f"width must be >= 1, got {width}")
        if not 0 < amplitude <= 1:
            raise InputError(f"amplitude must be in (0, 1], got {amplitude}")
        w = int(width)
        self.width = w
        self.amplitude = float(amplitude)
        self.victim_names: list[str] = []  # the classifiers it was trained against (saved with it)
        self.enc1 = nn.Sequential(_conv(4, w), _conv(w, w))  # full size
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), _conv(w, 2 * w))  # 1/2
        self.enc3 = nn.Sequential(nn.MaxPool2d(2), _conv(2 * w, 4 * w))  # 1/4
        self.enc4 = nn.Sequential(nn.MaxPool2d(2), _conv(4 * w, 4 * w))  # 1/8
        self.dec1 = _deconv(4 * w, 2 * w, stride=2)  # 1/8 -> 1/4
        self.dec2 = _deconv(2 * w, w, stride=4)  # 1/4 -> 1
        self.out = nn.Conv2d(w + 4, 3, 3, padding=1)
        nn.init.normal_(self.out.weight, std=init_scale)
        nn.init.zeros_(self.out.bias)

    def raw(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Unbounded output ``r`` ``[B,3,H,W]`` before :func:`bounded_perturbation`."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"x must have shape [B,3,H,W], got {list(x.shape)}")
        if c.shape != (x.shape[0], 1, x.shape[2], x.shape[3]):
            raise InputError(f"c must have shape {[x.shape[0], 1, x.shape[2], x.shape[3]]}, got {list(c.shape)}")
        h, w = x.shape[2], x.shape[3]
        inp = torch.cat([x, c.to(x.dtype)], dim=1)  # the paper's stacking operation s
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            inp = F.pad(inp, (0, pw, 0, ph), mode=mode)
        f = self.enc4(self.enc3(self.enc2(self.enc1(inp))))
        f = self.dec2(self.dec1(f))
        r = self.out(torch.cat([f, inp], dim=1))
        return r[:, :, :h, :w]

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``e = E(x, c)`` ``[B,3,H,W]`` with ``x + e`` in [0,1]."""
        return bounded_perturbation(self.raw(x, c), x, self.amplitude)

    def config(self) -> dict[str, float]:
        """Constructor arguments (saved next to the weights)."""
        return {"width": self.width, "amplitude": self.amplitude}


def make_jnd_net(width: int = 16, amplitude: float = 1.0, seed: int = 0) -> DMVJNDNet:
    """A freshly initialised :class:`DMVJNDNet`, reproducible from ``seed``; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DMVJNDNet(width=width, amplitude=amplitude)
