"""The DMV-JND objective of seed 003, eq. 7-15, as pure functions.

Notation (paper, section IV): ``x`` the photo, ``e`` the DMV-JND, ``x_hat = x + e``
(eq. 4), ``c`` the merged CAM (eq. 2), ``S_n`` the n-th classifier and
``l_n = argmax S_n(x)`` its clean label (eq. 5-6).

* Loss1 (eq. 8-9), the cross-entropy that keeps every classifier's label::

      Loss1 = (1/N) sum_n CE(S_n(x_hat), l_n)

* Loss2 (eq. 10-13), the magnitude loss that pulls the mean |JND| ``N0`` towards the
  redundancy ``N`` of the photo::

      I  = (1/HW) sum_{h,w} c(h,w)        N = 1 - I                 (eq. 10-11)
      N0 = (1/HW) sum_{h,w} |e(h,w)|                                 (eq. 12)
      Loss2 = ln((N^2 + N0^2 + q) / (2 N N0 + q))   >= 0, = 0 iff N0 = N   (eq. 13)

  ``q`` is "1^{-10}" in the paper, read as ``1e-10``. For a colour ``e``, ``|e(h,w)|``
  is averaged over the 3 channels.

* Loss3 (eq. 14-15), the spatial-distribution loss::

      v = softmax(c)       over the H*W pixels of each image (c flattened)   (eq. 14)
      Loss3 = <v, |e|>  = sum_{h,w} v(h,w) * |e(h,w)|                      (eq. 15)

  The paper writes ``<v, e>``. It says Loss3 makes the JND *small* where the CAM is
  high and that Loss3 *rises* as the JND grows during training (Fig. 6d), which holds
  for the magnitude ``|e|``, not for the signed ``e`` (minimising ``<v, e>`` with a
  signed ``e`` only pushes ``e`` negative in salient regions, unbounded by anything but the
  clip). jndkit therefore uses ``|e|`` (channel mean); ``signed=True`` gives the literal
  ``<v, mean_ch e>``.

* Total (eq. 7): ``Loss = Loss1 + alpha * Loss2 + beta * Loss3`` (alpha = beta = 1 in the paper).

Units of ``e``: the paper normalises its input to [-1,1] (``(x - 0.5)/0.5``, section V-A),
so its ``e`` is twice an ``e`` on jndkit's [0,1] pixel scale. :func:`jnd_objective` takes
``e_scale`` (default 2) and feeds ``e_scale * e`` to Loss2/Loss3, so ``N = 1 - I`` means
the same amount of change as in the paper (this is how its 9.56 dB PSNR arises).

Per-image values come first; ``reduction="mean"`` averages over the batch last.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError

Q_DEFAULT = 1e-10
"""``q`` of eq. 13 (the paper prints ``1^{-10}``)."""


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    if reduction == "sum":
        return per_image.sum()
    raise InputError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_cam_e(c: torch.Tensor, e: torch.Tensor) -> None:
    if c.ndim != 4 or c.shape[1] != 1:
        raise InputError(f"c must have shape [B,1,H,W], got {list(c.shape)}")
    if e.ndim != 4 or e.shape[0] != c.shape[0] or e.shape[2:] != c.shape[2:]:
        raise InputError(f"e must have shape [B,C,H,W] matching c {list(c.shape)}, got {list(e.shape)}")


def loss1_cross_entropy(
    logits: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], reduction: str = "mean"
) -> torch.Tensor:
    """Eq. 8-9: ``Loss1 = (1/N) sum_n CE(S_n(x_hat), l_n)``.

    Args:
        logits: one ``[B,K_n]`` tensor per classifier, computed on ``x_hat = x + e``.
        labels: one ``[B]`` tensor of clean labels ``l_n = argmax S_n(x)`` per classifier.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"`` (``[B]``).

    >>> z = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])]
    >>> round(float(loss1_cross_entropy(z, [torch.tensor([0]), torch.tensor([1])])), 4)
    0.41
    """
    if len(logits) == 0 or len(logits) != len(labels):
        raise InputError(f"need one label tensor per classifier, got {len(logits)} logits and {len(labels)} labels")
    per = torch.stack([F.cross_entropy(z, lab.to(z.device).long(), reduction="none") for z, lab in zip(logits, labels)])
    return _reduce(per.mean(dim=0), reduction)


def redundancy_target(c: torch.Tensor) -> torch.Tensor:
    """Eq. 10-11: ``N = 1 - (1/HW) sum c(h,w)`` per image, ``[B]``."""
    if c.ndim != 4 or c.shape[1] != 1:
        raise InputError(f"c must have shape [B,1,H,W], got {list(c.shape)}")
    return 1.0 - c.flatten(1).mean(dim=1)


def mean_abs_jnd(e: torch.Tensor) -> torch.Tensor:
    """Eq. 12: ``N0 = (1/HW) sum |e(h,w)|`` per image ``[B]`` (channels averaged too)."""
    if e.ndim != 4:
        raise InputError(f"e must have shape [B,C,H,W], got {list(e.shape)}")
    return e.abs().flatten(1).mean(dim=1)


def loss2_magnitude(c: torch.Tensor, e: torch.Tensor, q: float = Q_DEFAULT, reduction: str = "mean") -> torch.Tensor:
    """Eq. 13: ``Loss2 = ln(N^2 + N0^2 + q) - ln(2 N N0 + q)``, ``N = 1 - mean(c)``, ``N0 = mean|e|``.

    Args:
        c: merged CAM ``[B,1,H,W]`` in [0,1].
        e: JND ``[B,C,H,W]`` (in the units the target ``N`` refers to; see the module docstring).
        q: the small constant of eq. 13.

    >>> c = torch.full((1, 1, 2, 2), 0.5); e = torch.full((1, 3, 2, 2), 0.25)
    >>> round(float(loss2_magnitude(c, e)), 6)  # ln((0.25+0.0625)/(0.25)) = ln 1.25
    0.223144
    """
    _check_cam_e(c, e)
    n = redundancy_target(c)
    n0 = mean_abs_jnd(e)
    per = torch.log(n * n + n0 * n0 + q) - torch.log(2.0 * n * n0 + q)
    return _reduce(per, reduction)


def cam_softmax(c: torch.Tensor) -> torch.Tensor:
    """Eq. 14: ``v = softmax(c)`` over the ``H*W`` pixels of each image; ``[B,1,H,W]``, each map sums to 1."""
    if c.ndim != 4 or c.shape[1] != 1:
        raise InputError(f"c must have shape [B,1,H,W], got {list(c.shape)}")
    return torch.softmax(c.flatten(1), dim=1).view_as(c)


def loss3_spatial(c: torch.Tensor, e: torch.Tensor, signed: bool = False, reduction: str = "mean") -> torch.Tensor:
    """Eq. 15: ``Loss3 = <v, |e|> = sum_{h,w} softmax(c)(h,w) * mean_ch |e(h,w)|`` per image.

    ``signed=True`` uses the literal ``<v, mean_ch e(h,w)>`` instead of the magnitude
    (see the module docstring for why the magnitude is the default).

    >>> c = torch.tensor([[[[0.0, 1.0]]]]); e = torch.tensor([[[[0.3, -0.6]]]])
    >>> round(float(loss3_spatial(c, e)), 5)  # (0.3 + 0.6 exp(1)) / (1 + exp(1))
    0.51932
    """
    _check_cam_e(c, e)
    v = cam_softmax(c)
    m = e.mean(dim=1, keepdim=True) if signed else e.abs().mean(dim=1, keepdim=True)
    return _reduce((v * m).flatten(1).sum(dim=1), reduction)


def jnd_objective(
    logits: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    c: torch.Tensor,
    e: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    q: float = Q_DEFAULT,
    e_scale: float = 2.0,
    signed: bool = False,
    reduction: str = "mean",
) -> dict[str, torch.Tensor]:
    """Eq. 7: ``Loss = Loss1 + alpha * Loss2 + beta * Loss3``.

    Args:
        logits: per classifier ``[B,K]`` on ``x + e``; labels: per classifier ``[B]`` clean labels.
        c: merged CAM ``[B,1,H,W]``; e: JND ``[B,3,H,W]`` on the [0,1] pixel scale.
        alpha, beta: weights of eq. 7 (paper: 1, 1).
        q: constant of eq. 13.
        e_scale: Loss2/Loss3 see ``e_scale * e``; 2 = the paper's [-1,1] input scale.
        signed: literal signed inner product in Loss3.
        reduction: ``"mean"`` (scalars) or ``"none"`` (``[B]`` per image).

    Returns:
        dict with ``loss``, ``loss1``, ``loss2``, ``loss3`` and the diagnostics ``N`` (target)
        and ``N0`` (actual mean |e|, both in the paper's units).
    """
    es = e * e_scale
    l1 = loss1_cross_entropy(logits, labels, reduction)
    l2 = loss2_magnitude(c, es, q, reduction)
    l3 = loss3_spatial(c, es, signed, reduction)
    return {
        "loss": l1 + alpha * l2 + beta * l3,
        "loss1": l1,
        "loss2": l2,
        "loss3": l3,
        "N": _reduce(redundancy_target(c), reduction).detach(),
        "N0": _reduce(mean_abs_jnd(es), reduction).detach(),
    }
