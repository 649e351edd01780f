r"""Full-reference image quality metrics, one value per image.

Every metric takes a reference batch ``x0`` and a distorted batch ``x``, both float tensors of
shape ``[B,3,H,W]`` with values in [0,1], and returns a ``float64`` tensor of shape ``[B]``:
per-image values first, reduction (mean, std, median over a data set) by the caller.
The argument order is always ``(reference, distorted)``; it matters for ``vifp`` and ``hist_kl``,
the only asymmetric metrics.

Where a well-kept library has the metric, it is used (``torchmetrics.functional.image`` for PSNR,
SSIM, MS-SSIM, UQI, SCC and VIF-P; ``skimage.color`` for CIEDE2000). All computations run in
``float64`` (SSIM of a saved adversarial image sits at 0.9997 and above, so float32 rounding would
blur the differences that matter).

Each metric is declared in :data:`METRICS` with its direction (``higher_is_better``), whether its
value has a usable gradient (``is_differentiable``), its unit and the smallest image side it is
defined for. An image smaller than ``min_size`` gives ``NaN`` for that metric instead of an error,
so a table over mixed sizes still fills. :func:`compute_metrics` computes several at once.

Bounded memory. A call whose batch holds more than :data:`FULL_MAX_PIXELS` pixels (``B*H*W``) and
needs no gradient never holds a float64 copy of the whole image: the pixel-wise metrics (norms,
counts, PSNR, CIEDE2000, histograms, ``above_jnd``) run over strips of rows and give the full-image
value; SSIM and UQI run over tiles of :data:`TILE` px with a 5-pixel halo, which is exact because
only windows lying wholly inside the image count; MS-SSIM, SCC and VIF-P, whose multi-scale or
zero-padded definitions cannot be tiled exactly through torchmetrics, run on a copy downscaled by an
integer area average to at most :data:`FULL_MAX_PIXELS` pixels. ``compute_metrics(...,
return_info=True)`` says, per metric, which of these was done (e.g. ``"tiled 1024 px"``). Peak
memory and time for 1, 12 and 50 MP: ``benchmarks/bench_memory.py``.

Conventions shared by the pixel-count metrics: a value *changed* when
``|x - x0| > 0.5/255`` (:data:`CHANGE_THRESHOLD`). For images quantized to 8 bits (the way jndkit
always scores results) this is exactly "the 8-bit value differs", since two 8-bit values differ by
at least ``1/255``; for unquantized float images, a change below half an 8-bit level is not counted.

References
----------
- PSNR, MSE: e.g. Wang & Bovik, *Mean squared error: love it or leave it?*, IEEE SPM 2009.
- SSIM: Wang, Bovik, Sheikh, Simoncelli, *Image quality assessment: from error visibility to
  structural similarity*, IEEE TIP 13(4), 2004.
- MS-SSIM: Wang, Simoncelli, Bovik, *Multiscale structural similarity for image quality
  assessment*, Asilomar 2003.
- UQI: Wang & Bovik, *A universal image quality index*, IEEE SPL 9(3), 2002.
- SCC: Zhou, Civco, Silander, *A wavelet transform method to merge Landsat TM and SPOT panchromatic
  data*, IJRS 19(4), 1998.
- VIF-P: Sheikh & Bovik, *Image information and visual quality*, IEEE TIP 15(2), 2006.
- CIEDE2000: Sharma, Wu, Dalal, *The CIEDE2000 color-difference formula*, CR&A 30(1), 2005.
- Seed 000 (Akan et al.): Tables 1-5 (PSNR, SSIM, UQI, SCC, VIFP, L1/L2/L-inf), eq. 9 (colour
  histogram KL), eq. 10 (squared L2). Seed 001 (Sun et al.): ratio of changed ("deviation") pixels.

Layout (issue 11): :mod:`.full` holds the public per-metric functions, :mod:`.impl` their
implementations on validated tensors, :mod:`.bounded` the validation, the per-call context and the
strips / tiles / downscaled copies, :mod:`.registry` :class:`Metric`, :data:`METRICS` and
:func:`compute_metrics`. Every public name is re-exported here.
"""

from __future__ import annotations

import sys
import types

from . import bounded, impl
from .bounded import _STRIP_PIXELS as _STRIP_PIXELS  # a tunable (see _Package)
from .bounded import CHANGE_THRESHOLD, FULL_MAX_PIXELS, TILE
from .full import (
    above_jnd,
    changed_ratio,
    changed_values,
    ciede2000_max,
    ciede2000_mean,
    hist_kl,
    l0,
    l1,
    l2,
    l2_squared,
    linf,
    ms_ssim,
    mse,
    psnr,
    scc,
    ssim,
    uqi,
    vifp,
)
from .registry import METRICS, Metric, compute_metrics

__all__ = [
    "CHANGE_THRESHOLD",
    "FULL_MAX_PIXELS",
    "METRICS",
    "TILE",
    "Metric",
    "above_jnd",
    "changed_ratio",
    "changed_values",
    "ciede2000_max",
    "ciede2000_mean",
    "compute_metrics",
    "hist_kl",
    "l0",
    "l1",
    "l2",
    "l2_squared",
    "linf",
    "ms_ssim",
    "mse",
    "psnr",
    "scc",
    "ssim",
    "uqi",
    "vifp",
]

_TUNABLES = ("FULL_MAX_PIXELS", "TILE", "_STRIP_PIXELS")
"""Size limits read at call time by :mod:`.bounded` and :mod:`.impl` (``TILE`` in ``impl``'s info lines)."""


class _Package(types.ModuleType):
    """The ``jndkit.metrics`` module: setting a tunable here sets it where the code reads it.

    When this package was one module, ``jndkit.metrics.TILE = 256`` (or a test's
    ``monkeypatch.setattr(jndkit.metrics, "FULL_MAX_PIXELS", 500)``) changed the limit every metric
    used. The limits now live in the submodules that read them, so the assignment is forwarded there
    to keep that behaviour (Python's documented module ``__class__`` assignment; no library does this).
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in _TUNABLES:
            for module in (bounded, impl):
                if hasattr(module, name):
                    setattr(module, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
