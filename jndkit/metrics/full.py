"""The public per-metric functions ``metric(x0, x) -> Tensor[B]`` float64, one value per image.

Each validates and converts its inputs once (:func:`jndkit.metrics.bounded._run`) and calls its
implementation in :mod:`jndkit.metrics.impl`. Moved verbatim from the former ``jndkit/metrics.py``
(issue 11); see :mod:`jndkit.metrics` for the conventions shared by all metrics.
"""

from __future__ import annotations

from torch import Tensor

from ..errors import InputError
from .bounded import _Context, _nan, _run
from .impl import (
    _HIST_BINS,
    _HIST_EPS,
    _above_jnd,
    _changed_ratio,
    _changed_values,
    _ciede2000_max,
    _ciede2000_mean,
    _hist_kl_impl,
    _l0,
    _l1,
    _l2,
    _l2_squared,
    _linf,
    _ms_ssim,
    _mse,
    _psnr,
    _scc,
    _ssim,
    _uqi,
    _vifp,
)

# --------------------------------------------------------------------------------------------
# public per-metric functions


def psnr(x0: Tensor, x: Tensor) -> Tensor:
    r"""Peak signal-to-noise ratio in dB, data range 1.

    .. math:: \mathrm{PSNR} = 10 \log_{10} \frac{1}{\mathrm{MSE}}, \qquad
              \mathrm{MSE} = \frac{1}{3HW} \sum (x - x_0)^2

    Identical images give ``+inf`` (MSE = 0); a caller averaging over a data set must decide how
    to treat them (e.g. report their count apart). For images quantized to 8 bits this is exactly
    the 8-bit PSNR (``MAX = 255`` on ``round(255 x)``), since scaling both images and the peak by
    255 leaves the ratio unchanged. Via ``torchmetrics.functional.image.peak_signal_noise_ratio``,
    which converts to base 10 with a float32 ``log(10)``: relative error below 1e-7 (~2e-6 dB).

    Args:
        x0: reference ``[B,3,H,W]`` in [0,1].
        x: distorted ``[B,3,H,W]`` in [0,1].

    Returns:
        ``[B]`` float64, dB, higher is better.
    """
    return _run(_psnr, x0, x)


def ssim(x0: Tensor, x: Tensor) -> Tensor:
    r"""Structural similarity (Wang et al. 2004), Gaussian window 11x11, sigma 1.5, data range 1.

    .. math:: \mathrm{SSIM}(p) = \frac{(2\mu_x\mu_{x_0} + C_1)(2\sigma_{x x_0} + C_2)}
              {(\mu_x^2 + \mu_{x_0}^2 + C_1)(\sigma_x^2 + \sigma_{x_0}^2 + C_2)},
              \quad C_1 = (0.01)^2,\; C_2 = (0.03)^2

    with population (not sample) local statistics, averaged over the valid pixels of every channel.
    The map comes from ``torchmetrics.functional.image.structural_similarity_index_measure``
    (reflect padding); a border of 5 pixels is then cropped before averaging, so that only windows
    lying wholly inside the image count. This is the convention of Wang's reference code
    (``filter2(..., 'valid')``) and of ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)``, which it matches to float precision.
    torchmetrics' own mean keeps the padded border and differs by about 1e-4 on small images.

    Returns ``NaN`` for images with a side below 11 pixels (no complete window).

    Returns:
        ``[B]`` float64 in [-1, 1], higher is better.
    """
    return _run(_ssim, x0, x)


def ms_ssim(x0: Tensor, x: Tensor) -> Tensor:
    r"""Multi-scale SSIM (Wang et al. 2003), 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333).

    .. math:: \mathrm{MS\mbox{-}SSIM} = l_M^{\beta_M} \prod_{j=1}^{M} cs_j^{\beta_j}

    Via ``torchmetrics.functional.image.multiscale_structural_similarity_index_measure`` (Gaussian
    11x11, sigma 1.5, data range 1, ``normalize="relu"``, reflect padding, no border crop).
    Four 2x average-poolings leave ``side // 16`` pixels at the coarsest scale, which must exceed the
    window (10): images with a side below 176 pixels give ``NaN`` (the metric is undefined there).

    Returns:
        ``[B]`` float64, higher is better.
    """
    return _run(_ms_ssim, x0, x)


def uqi(x0: Tensor, x: Tensor) -> Tensor:
    r"""Universal image quality index (Wang & Bovik 2002), averaged over pixels and channels.

    .. math:: Q = \frac{4\,\sigma_{x x_0}\,\mu_x \mu_{x_0}}{(\sigma_x^2 + \sigma_{x_0}^2)(\mu_x^2 + \mu_{x_0}^2)}

    i.e. SSIM with ``C1 = C2 = 0``. Via ``torchmetrics.functional.image.universal_image_quality_index``:
    Gaussian 11x11 window with sigma 1.5 (the original paper used an 8x8 uniform window), valid
    pixels only. Where both images are locally flat, Q is 0/0; torchmetrics adds machine epsilon to
    the denominator, so such windows score 0, and identical images reach exactly 1 only when no window
    is flat. Returns ``NaN`` for images with a side below 11 pixels.

    Returns:
        ``[B]`` float64 in [-1, 1], higher is better.
    """
    return _run(_uqi, x0, x)


def scc(x0: Tensor, x: Tensor) -> Tensor:
    r"""Spatial correlation coefficient (Zhou et al. 1998) of the high-pass details.

    Both images are filtered per channel with the Laplacian ``[[-1,-1,-1],[-1,8,-1],[-1,-1,-1]]``;
    the local correlation coefficient of the two filtered images in an 8x8 uniform window

    .. math:: \mathrm{SCC}(p) = \frac{\sigma_{h h_0}(p)}{\sigma_h(p)\,\sigma_{h_0}(p)}

    is averaged over pixels and channels (0 where a window is flat). Via
    ``torchmetrics.functional.image.spatial_correlation_coefficient``, which computes in float32.
    Returns ``NaN`` for images with a side below 8 pixels.

    Returns:
        ``[B]`` float64 in [-1, 1], higher is better.
    """
    return _run(_scc, x0, x)


def vifp(x0: Tensor, x: Tensor) -> Tensor:
    r"""Pixel-domain visual information fidelity, VIF-P (Sheikh & Bovik 2006).

    .. math::
        \mathrm{VIF} = \frac{\sum_{s,p} \log_{10}\!\left(1 + g^2 \sigma_{x_0}^2 / (\sigma_v^2 + \sigma_n^2)\right)}
                             {\sum_{s,p} \log_{10}\!\left(1 + \sigma_{x_0}^2 / \sigma_n^2\right)}

    over 4 scales, per channel, then averaged over channels. The images are scaled to 8-bit grey
    levels (x 255) before the call, because the visual-noise variance ``sigma_n^2 = 2`` of the
    original definition is in grey levels squared; on the [0,1] scale it would swamp the local
    variances and make the metric nearly blind to noise. Via
    ``torchmetrics.functional.image.visual_information_fidelity``. Computed without gradient:
    torchmetrics 1.9 masks tensors in place after using them, which breaks autograd.
    Returns ``NaN`` for images with a side below 41 pixels.

    Returns:
        ``[B]`` float64, 1 for identical images, higher is better.
    """
    return _run(_vifp, x0, x)


def l0(x0: Tensor, x: Tensor) -> Tensor:
    r"""Number of changed values (pixels x channels), :math:`\#\{i : |x_i - x_{0,i}| > 0.5/255\}`.

    For 8-bit quantized images this counts the 8-bit values that differ. Returns a count (float64).
    """
    return _run(_l0, x0, x)


def l1(x0: Tensor, x: Tensor) -> Tensor:
    r""":math:`\|x - x_0\|_1 = \sum_i |x_i - x_{0,i}|` over all ``3*H*W`` values, on the [0,1] scale.

    Not normalised by the number of values: this is the convention of seed 000, Tables 2 and 5
    (e.g. ImageNet 224x224, FGSM: L1 = 400.11, L2 = 1.0012, L-inf = 0.0131, consistent only with
    plain sums on the [0,1] scale).
    """
    return _run(_l1, x0, x)


def l2(x0: Tensor, x: Tensor) -> Tensor:
    r""":math:`\|x - x_0\|_2 = \sqrt{\sum_i (x_i - x_{0,i})^2}` over all values, [0,1] scale, unnormalised.

    Seed 000, Tables 2, 3 and 5. The squared form of its eq. 10 is :func:`l2_squared`; the
    mean-normalised form is :func:`mse` (``l2**2 / (3HW)``).
    """
    return _run(_l2, x0, x)


def l2_squared(x0: Tensor, x: Tensor) -> Tensor:
    r""":math:`\sum_i (x_i - x_{0,i})^2` on the [0,1] scale: seed 000, eq. 10 (its Fig. 8)."""
    return _run(_l2_squared, x0, x)


def linf(x0: Tensor, x: Tensor) -> Tensor:
    r""":math:`\|x - x_0\|_\infty = \max_i |x_i - x_{0,i}|` on the [0,1] scale (seed 000, Tables 2 and 5)."""
    return _run(_linf, x0, x)


def mse(x0: Tensor, x: Tensor) -> Tensor:
    r"""Mean squared error :math:`\frac{1}{3HW}\sum_i (x_i - x_{0,i})^2` on the [0,1] scale.

    The resolution-independent form of :func:`l2_squared`, and the quantity behind :func:`psnr`
    (``psnr = -10 log10(mse)``).
    """
    return _run(_mse, x0, x)


def changed_ratio(x0: Tensor, x: Tensor) -> Tensor:
    r"""Share of pixel positions where any channel changed by at least one 8-bit level.

    .. math:: \frac{1}{HW} \#\{(h,w) : \max_c |x_{c,h,w} - x_{0,c,h,w}| > 0.5/255\}

    Seed 001's "ratio of deviation pixels" (#non-zero / N in the absolute-difference map).
    In [0, 1], lower is better.
    """
    return _run(_changed_ratio, x0, x)


def changed_values(x0: Tensor, x: Tensor) -> Tensor:
    r"""Share of values (pixels x channels) that changed: ``l0 / (3*H*W)``, in [0, 1]."""
    return _run(_changed_values, x0, x)


def ciede2000_mean(x0: Tensor, x: Tensor) -> Tensor:
    r"""Mean over pixels of the CIEDE2000 colour difference :math:`\Delta E_{00}` between the images.

    sRGB (D65, 2 degree observer) to CIELAB with ``skimage.color.rgb2lab``, then
    ``skimage.color.deltaE_ciede2000`` (kL = kC = kH = 1) per pixel. NumPy on the CPU, one image
    at a time, not differentiable. About 1 means a just-perceptible colour difference.
    """
    return _run(_ciede2000_mean, x0, x)


def ciede2000_max(x0: Tensor, x: Tensor) -> Tensor:
    r"""Maximum over pixels of :math:`\Delta E_{00}` (see :func:`ciede2000_mean`)."""
    return _run(_ciede2000_max, x0, x)


def hist_kl(x0: Tensor, x: Tensor, *, bins: int = _HIST_BINS, eps: float = _HIST_EPS) -> Tensor:
    r"""Colour-histogram Kullback-Leibler divergence, seed 000 eq. 9, in nats.

    .. math:: \mathrm{KL}[p \,\|\, q] = \frac{1}{3}\sum_{c \in \{R,G,B\}} \sum_{r} p_c(r) \ln\frac{p_c(r)}{q_c(r)}

    ``p`` is the colour distribution of the reference (true) image ``x0``, ``q`` that of the
    distorted (adversarial) image ``x``, as in the paper. The paper leaves the estimator open; here:

    - values are rounded to 8-bit levels ``k = round(255 v)`` (as the image is saved);
    - one histogram per channel (a joint 256^3 histogram would be almost empty), ``bins`` bins, level
      ``k`` in bin ``floor(k * bins / 256)``; default 256, one bin per level;
    - each histogram is normalised to sum to 1, then smoothed
      ``p <- (p + eps) / (1 + bins * eps)`` with ``eps = 1e-10`` so that a level present in the
      reference but absent from the distorted image gives a large finite value, not infinity;
    - the three per-channel divergences are averaged.

    Eq. 9 as extracted carries a leading minus sign; with it the divergence would be <= 0, so it is
    read as the usual (non-negative) KL. Identical images give exactly 0. Not differentiable.

    Args:
        x0: reference ``[B,3,H,W]`` in [0,1].
        x: distorted ``[B,3,H,W]`` in [0,1].
        bins: number of histogram bins per channel, 1 to 256.
        eps: smoothing added to every bin probability, > 0.

    Returns:
        ``[B]`` float64 >= 0, nats, lower is better.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 256:
        raise InputError(f"bins must be an integer in [1, 256], got {bins!r}")
    if not eps > 0:
        raise InputError(f"eps must be > 0, got {eps}")
    eps_f = float(eps)

    def impl(a: Tensor, b: Tensor, ctx: _Context) -> Tensor:
        if b.shape[-2] * b.shape[-1] == 0:
            return _nan(b)
        return _hist_kl_impl(a, b, bins, eps_f, ctx.large)

    return _run(impl, x0, x)


def above_jnd(x0: Tensor, x: Tensor, jnd: Tensor | None) -> Tensor:
    r"""Share of values whose change exceeds the human JND threshold map.

    .. math:: \frac{1}{3HW} \#\{i : |x_i - x_{0,i}| > \mathrm{jnd}_i\}

    Args:
        x0: reference ``[B,3,H,W]`` in [0,1].
        x: distorted ``[B,3,H,W]`` in [0,1].
        jnd: per-value visibility threshold ``[B,3,H,W]`` in [0,1] units (e.g. from
            ``jndkit.perception``); a change equal to the threshold is not counted. ``None`` gives
            ``NaN`` (nothing to compare against).

    Returns:
        ``[B]`` float64 in [0, 1], lower is better.
    """
    return _run(_above_jnd, x0, x, jnd)

