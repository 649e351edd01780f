"""Faces as a task of the pipeline (:class:`FaceTask`): :class:`~jndkit.face.protect.FaceProtector`
attacks every face of a photo; the pipeline writes it, re-reads the file and asks :meth:`FaceTask.judge`
for the from-scratch verdict (detect again, align, embed, compare), as for every task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..images import LoadedImage
from ..pipeline import Attempt, ProgressFn, Record
from ..protect_config import parse_robust, reencode
from .boxes import int_box
from .record import FaceProtection, FaceRecord, face_summary
from .strategy import _r, nearest_identity

__all__ = ["FaceTask"]


@dataclass
class FaceTask:
    """``jndkit protect --task face`` for the pipeline: a :class:`~jndkit.face.protect.FaceProtector`
    (``protector``) with the output format, quality and robust re-encoding."""

    protector: Any  # FaceProtector (typed loosely: face.protect imports this module)
    fmt: str = "png"
    quality: int = 95
    robust: str = "none"
    name: str = "face"

    def config_json(self) -> dict[str, Any]:
        p = self.protector
        return {"task": "face", "goal": p.goal_spec, "method": p.method_name, "preset": p.preset,
                "max_iter": p.max_iter, "seed": p.seed, "format": self.fmt, "quality": self.quality,
                "robust": self.robust, "kappa": p.kappa, "threshold": p.threshold, "min_prob": p.min_prob,
                "rounds": p.rounds, "gallery": sorted(p.gallery)}

    def new_record(self, src: Path) -> FaceRecord:
        return FaceRecord(input=str(src), goal=self.protector.goal_spec, method=self.protector.method_name)

    def protect(self, image: LoadedImage, dst: Path, record: Record, progress: ProgressFn | None) -> Attempt:
        """Protect every face (the whole photo as one sample); no face: nothing to write."""
        p = self.protector
        prot: FaceProtection = p.protect_image(image.rgb, dst.suffix.lstrip(".").lower(), self.quality,
                                               self.robust, progress)
        if prot.x_adv is None or prot.result is None:
            return Attempt(None, status="no-face",
                           reason=f"no face detected (MTCNN probability >= {p.min_prob:g}); nothing written")
        res = prot.result
        record.success_engine = bool(res.success[0])
        record.margin = _r(float(res.margin[0]))
        record.iterations, record.tries = int(res.iterations[0]), int(res.tries[0])
        assert isinstance(record, FaceRecord)
        record.rounds = prot.rounds
        return Attempt(prot.x_adv, alpha=image.alpha, state=prot)

    def judge(self, attempt: Attempt, clean: torch.Tensor, saved: torch.Tensor, record: Record) -> bool:
        """Every face judged from scratch on the re-read file (and after the robust re-encoding)."""
        from .. import metrics

        assert isinstance(record, FaceRecord)
        p, prot = self.protector, attempt.state
        refs, names, clean_emb = prot.references, prot.reference_names, prot.clean_embeddings
        checks, _ = p.check(saved, prot.faces, refs, names)
        record.success = all(c["protected"] for c in checks)
        rob = parse_robust(self.robust)
        robust_checks: list[dict[str, Any]] | None = None
        if rob is not None:
            robust_checks, _ = p.check(reencode(*rob)(saved[None])[0], prot.faces, refs, names)
            record.robust_success = all(c["protected"] for c in robust_checks)
        record.faces = []
        for i, (face, c) in enumerate(zip(prot.faces, checks, strict=True)):
            ident, gd = nearest_identity(clean_emb[i], p.gallery)
            x1, y1, x2, y2 = int_box(face.box, clean.shape[-1], clean.shape[-2])
            fm = metrics.compute_metrics(clean[None, :, y1:y2, x1:x2], saved[None, :, y1:y2, x1:x2],
                                         names=["psnr", "ssim"])
            d0 = float(torch.linalg.vector_norm(refs[i] - clean_emb[i], dim=1).min())
            entry = {
                "box": [round(v, 1) for v in face.box], "prob": _r(face.prob, 6),
                "reference": p.strategy.reference_label(names[i]),
                "distance_before": _r(d0),
                "identity_before": ident if gd is not None and gd < p.threshold else None,
                "gallery_distance_before": _r(gd),
                **c,
                "psnr": _r(float(fm["psnr"][0])), "ssim": _r(float(fm["ssim"][0]), 6),
            }
            if robust_checks is not None:
                entry["robust_protected"] = robust_checks[i]["protected"]
                entry["robust_distance_after"] = robust_checks[i]["distance_after"]
            record.faces.append(entry)
        face_psnr = [f["psnr"] for f in record.faces if f["psnr"] is not None]
        record.psnr_faces = min(face_psnr) if face_psnr else None
        return record.success and record.robust_success is not False

    def why_not(self, record: Record) -> str:
        faces = getattr(record, "faces", [])
        bad = sum(not (f["protected"] and f.get("robust_protected", True)) for f in faces)
        return f"{bad} of {len(faces)} face(s) still {self.protector.strategy.failure()} in the encoded file"

    def hint(self, record: Record) -> str:
        return "no attempt kept; raise --max-iter or try another method"

    def summarise(self, records: Sequence[Record]) -> dict[str, Any]:
        return face_summary(records)
