"""The upload suite (what a platform does to a posted photo) and its differentiable stand-ins.

Two kinds of transform live here, and they never mix:

* **Real transforms** (:class:`UploadTransform`, grouped in a versioned :class:`UploadSuite`) run
  Pillow exactly as a platform would: an optional Lanczos downscale, then a JPEG (4:2:0) or WebP
  encode, then a decode. They are not differentiable. Success of a protection is decided only on
  their output.
* **Differentiable stand-ins** (:func:`diff_jpeg`, :func:`random_resize`, :class:`UploadStandIn`)
  approximate them inside the optimisation (expectation over transformation, EOT). They never decide
  success.

Layout (issue 11): the real transforms and suites live in :mod:`jndkit.transforms.upload`, the
differentiable stand-ins in :mod:`jndkit.transforms.standin`; every public name is re-exported here.
"""

from __future__ import annotations

from .standin import GRAD_FLOOR as GRAD_FLOOR
from .standin import UploadStandIn, diff_jpeg, jpeg_quant_tables, random_resize
from .upload import CODECS as CODECS
from .upload import RESAMPLE as RESAMPLE
from .upload import SUITES, UploadSuite, UploadTransform, get_suite, parse_transform

__all__ = [
    "SUITES",
    "UploadStandIn",
    "UploadSuite",
    "UploadTransform",
    "diff_jpeg",
    "get_suite",
    "jpeg_quant_tables",
    "parse_transform",
    "random_resize",
]
