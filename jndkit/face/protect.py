"""Protect the faces in photos, at full resolution, and prove it on the saved file.

This is the library behind ``jndkit protect --task face``. For each photo:

1. decode it at its own size and find its faces with stock MTCNN (probability >= ``min_prob``);
   a photo without one is reported as ``no-face`` (nothing is written);
2. attack **the whole photo as one sample**: the victim returns the descriptors of all its faces
   (:class:`~jndkit.face.victim.FacesVictim`) or their MTCNN face logits
   (:class:`~jndkit.face.victim.FaceHideVictim`), and the goal asks every face at once
   (:class:`~jndkit.face.goals.Dodge`, :class:`~jndkit.face.goals.Impersonate`,
   :class:`~jndkit.face.goals.Hide`), so one image protects all faces; success is decided by the
   engine on the 8-bit image (and after re-encoding, for JPEG/WebP output or ``robust``);
3. check the result **from scratch** as a third party would: encode, decode, detect again with stock
   MTCNN (no box or landmark of the clean photo is reused), align, embed, compare. A face that the
   fresh alignment still recognises (or still finds, for hiding) starts another *round*: its new
   alignment (for hiding: every box stock MTCNN handed its last net over the face) joins the victim
   and the photo is attacked again from the clean image, up to ``rounds`` times;
4. encode the photo, **re-read the encoded file** (in a private temporary folder) and repeat the
   check of step 3: the record's ``success`` is that re-check. Only a photo that passes takes its
   output name (written atomically, byte for byte the file that was checked); a photo that fails
   writes nothing at all.

Everything that differs between goals (references, victim and engine goal, kappa, rounds, retry
rule, verdict) is the goal's :class:`~jndkit.face.strategy.FaceStrategy`
(:mod:`jndkit.face.strategy`): ``dodge`` (no face recognised as itself: without a gallery the
reference is each face's clean descriptor, with one the gallery identity it matches),
``impersonate:NAME`` (every face recognised as gallery identity NAME), ``hide`` (MTCNN finds none
of the faces). Measured on obama.jpg with ``ddn``: stock MTCNN no longer finds the face after 6
rounds (:data:`~jndkit.face.strategy.HIDE_ROUNDS` allows 8), at 44.4 dB over the photo and 33.7 dB
over the face box; asking PNet's windows or RNet as well cost far more (PNet's coarsest windows see
the face blurred to 12 px, so only low-frequency changes move them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..attacks import AttackResult, get_method, run_attack
from ..errors import InputError
from ..images import output_path, quantize
from ..pipeline import check_output_settings, prepare_run, protect_one, run_paths
from ..protect_config import parse_robust, reencode
from .boxes import SAME_FACE_IOU, region, same_face, shifted
from .detect import Face, FaceDetector
from .dlib_net import DlibFaceNet
from .methods import FACE_LEVELS, FACE_PARAMS, face_method
from .record import FaceProtection, FaceRecord, summarise
from .strategy import (
    DEFAULT_ROUNDS,
    HIDE_JITTER,
    HIDE_ROUNDS,
    HIDE_STAGES,
    IMPERSONATE_KAPPA,
    SELF_DODGE_KAPPA,
    FaceContext,
    FaceStrategy,
    _r,
    parse_face_goal,
)
from .task import FaceTask
from .victim import (
    HIDE_GROW,
    HIDE_PAD,
    SAME_PERSON_DISTANCE,
    FaceHideVictim,
    FacesVictim,
    _default_detector,
    _default_net,
    build_gallery,
    embed_faces,
)

__all__ = [
    "DEFAULT_ROUNDS",
    "FACE_LEVELS",
    "FACE_PARAMS",
    "HIDE_GROW",
    "HIDE_JITTER",
    "HIDE_PAD",
    "HIDE_ROUNDS",
    "HIDE_STAGES",
    "IMPERSONATE_KAPPA",
    "SAME_FACE_IOU",
    "SELF_DODGE_KAPPA",
    "FaceHideVictim",
    "FaceProtection",
    "FaceProtector",
    "FaceRecord",
    "FacesVictim",
    "face_method",
    "parse_face_goal",
    "protect_face_paths",
    "summarise",
]

ProgressFn = Callable[[int, int, dict[str, Any]], None]

class FaceProtector:
    """Protects the faces of one photo at a time with one goal, method and gallery.

    Args:
        goal: ``dodge``, ``impersonate:NAME`` or ``hide`` (any goal of
            :func:`~jndkit.face.strategy.register_face_goal`).
        gallery: ``{name: [k,128]}`` descriptors, a folder for :func:`~jndkit.face.victim.build_gallery`,
            or ``None``.
        method, preset, max_iter, seed: the attack (:func:`~jndkit.attacks.get_method`,
            :func:`~jndkit.attacks.run_attack`).
        kappa: the goal's safety margin (default: 0.08 distance for impersonation
            (:data:`~jndkit.face.strategy.IMPERSONATE_KAPPA`), 0.05 for dodging a gallery identity and
            for dodging without a gallery (:data:`~jndkit.face.strategy.SELF_DODGE_KAPPA`), 0.5
            logit for hiding).
        threshold: the recogniser's same-person distance (0.6).
        min_prob: faces with a lower MTCNN probability are not protected (0.9, as
            :func:`~jndkit.face.victim.verify_face_photo`; stock MTCNN also reports some background
            patches at 0.7-0.9).
        rounds: engine runs at most per photo (a later run adds the fresh detection's alignment or box;
            default :data:`~jndkit.face.strategy.DEFAULT_ROUNDS`, 3, and
            :data:`~jndkit.face.strategy.HIDE_ROUNDS`, 8, for ``hide``).
        jitter: extra alignments per face the descriptor goals must hold for (0-4: landmarks shifted
            by +-3 % of the eye distance, scaled by +-4 %), so that the protection survives the
            slightly different alignment of a fresh detection or of another recogniser's pipeline
            (measured on obama.jpg with ``ddn``: re-checked distance 0.58 without, 0.69 with 4, for
            0.8 dB less PSNR over the face; with 2, dlib's own pipeline was not dodged on obama.jpg
            and obama2.jpg). Dodging without a gallery measures each alignment from its own clean
            descriptor.
        hide_stages: MTCNN nets the hiding goal pushes below their thresholds (default ONet only,
            :data:`~jndkit.face.strategy.HIDE_STAGES`).
        hide_jitter: relative shift and scale of the extra boxes about each face for hiding
            (:data:`~jndkit.face.strategy.HIDE_JITTER`; 0: the MTCNN box and stock MTCNN's ONet boxes only).
        detector, net: default: stock MTCNN and dlib's network, loaded once per process.

    Attributes:
        strategy: the goal's :class:`~jndkit.face.strategy.FaceStrategy` (its ``kind``, ``kappa`` and
            ``rounds`` are also :attr:`kind`, :attr:`kappa`, :attr:`rounds`).

    Raises:
        InputError: a bad goal, method or robustness setting, ``impersonate`` without the identity in
            the gallery.
    """

    def __init__(
        self,
        goal: str = "dodge",
        gallery: Mapping[str, torch.Tensor] | str | os.PathLike[str] | None = None,
        method: str = "ddn",
        preset: str | None = None,
        max_iter: int | None = None,
        seed: int = 0,
        *,
        kappa: float | None = None,
        threshold: float = SAME_PERSON_DISTANCE,
        min_prob: float = 0.9,
        rounds: int | None = None,
        jitter: int = 4,
        hide_stages: tuple[str, ...] = HIDE_STAGES,
        hide_jitter: float = HIDE_JITTER,
        detector: FaceDetector | None = None,
        net: DlibFaceNet | None = None,
    ) -> None:
        spec = parse_face_goal(goal)
        self.goal_spec = goal
        if rounds is not None and rounds < 1:
            raise InputError(f"rounds must be >= 1, got {rounds}")
        if not 0 <= jitter <= 4:
            raise InputError(f"jitter must be in 0..4, got {jitter}")
        if max_iter is not None and max_iter < 0:
            raise InputError(f"max_iter must be >= 0, got {max_iter}")
        if not 0.0 <= min_prob <= 1.0:
            raise InputError(f"min_prob must lie in [0,1], got {min_prob}")
        if method in FACE_PARAMS and preset is None:
            # the classifier defaults barely move a face descriptor (levels: distance 0.25 after 200
            # steps on obama.jpg, a dodge needs 0.75); see FACE_PARAMS
            self.method = get_method(method, None, **FACE_PARAMS[method])
        else:
            self.method = get_method(method, preset)
        self.method = face_method(self.method)  # mnd: the goal's loss instead of class scores
        self.method_name, self.preset = method, preset
        self.max_iter, self.seed = max_iter, int(seed)
        self.threshold, self.min_prob = float(threshold), float(min_prob)
        if not 0 <= hide_jitter < 0.5:
            raise InputError(f"hide_jitter must be in [0, 0.5), got {hide_jitter}")
        self.detector = detector or _default_detector()
        self.net = net if net is not None else _default_net()
        if gallery is None:
            self.gallery: dict[str, torch.Tensor] = {}
        elif isinstance(gallery, Mapping):
            self.gallery = {str(k): torch.as_tensor(v).reshape(-1, 128).float() for k, v in gallery.items()}
        else:
            self.gallery = build_gallery(gallery, detector=self.detector, net=self.net)
        ctx = FaceContext(self.detector, self.net, self.gallery, self.threshold, int(jitter), hide_stages,
                          float(hide_jitter))
        self.strategy: FaceStrategy = spec.build(ctx, kappa, rounds)
        self.kind, self.target_name = spec
        self.kappa, self.rounds = self.strategy.kappa, self.strategy.rounds
        self.jitter, self.hide_stages, self.hide_jitter = ctx.jitter, ctx.hide_stages, ctx.hide_jitter

    # -- the from-scratch check ----------------------------------------------------------------
    def check(self, image: torch.Tensor, faces: list[Face], refs: list[torch.Tensor],
              ref_names: list[str | None]) -> tuple[list[dict[str, Any]], list[Face | None]]:
        """Judge ``image`` ``[3,H,W]`` (as saved) from scratch: detect (stock MTCNN), align, embed.

        Returns per clean face a dict (``detected_after``, ``box_after``, ``prob_after``,
        ``distance_after``: to the face's reference set, ``identity_after``/``gallery_distance_after``:
        nearest gallery identity, ``protected``: the strategy's verdict) and the fresh detection
        matched to it (or ``None``). ``ref_names`` is kept for callers of the earlier signature.
        """
        found = self.detector.detect(image)
        out: list[dict[str, Any]] = []
        matched: list[Face | None] = []
        for face, ref in zip(faces, refs):
            again = same_face(face.box, found)
            rec: dict[str, Any] = {"detected_after": again is not None, "box_after": None, "prob_after": None,
                                   "distance_after": None, "identity_after": None, "gallery_distance_after": None}
            if again is not None:
                rec["box_after"] = [round(v, 1) for v in again.box]
                rec["prob_after"] = _r(again.prob, 6)
            rec.update(self.strategy.verdict(image, again, ref))
            out.append(rec)
            matched.append(again)
        return out, matched

    def check_transform(self, fmt: str, quality: int, robust: tuple[str, int] | None
                        ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """What success must survive: the lossy output format, then the robust re-encoding."""
        steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
        if fmt in ("jpg", "jpeg", "webp"):
            steps.append(reencode("jpg" if fmt == "jpeg" else fmt, quality))
        if robust is not None:
            steps.append(reencode(*robust))
        if not steps:
            return None

        def transform(x: torch.Tensor) -> torch.Tensor:
            for s in steps:
                x = s(x)
            return x

        return transform

    # -- one photo -------------------------------------------------------------------------------
    def protect_image(self, x: torch.Tensor, fmt: str = "png", quality: int = 95, robust: str = "none",
                      progress: ProgressFn | None = None) -> FaceProtection:
        """Protect every face of ``x`` ``[3,H,W]`` in [0,1] in one 8-bit image (nothing is written).

        ``fmt``/``quality`` say how the image will be saved (``png`` is lossless); ``robust`` (``none``,
        ``jpeg:Q``, ``webp:Q``) asks the protection to hold after that re-encoding too.
        """
        if x.ndim != 3 or x.shape[0] != 3:
            raise InputError(f"x must have shape [3,H,W], got {list(x.shape)}")
        rob = parse_robust(robust)
        x0 = quantize(x.detach().float())[None]
        faces = self.detector.detect(x0[0], min_prob=self.min_prob)
        if not faces:
            return FaceProtection(None, [], [], False, None, 0, torch.zeros(0, 128), [], [])
        clean_emb = embed_faces(x0[0], faces, self.net)
        refs, names = self.strategy.references(clean_emb)
        transform = self.check_transform(fmt, quality, rob)
        save_check = self.check_transform(fmt, quality, None)
        # entries of the victim: (face index, alignment or box); a failed round adds fresh detections
        entries = self.strategy.entries(x0[0], faces)
        result: AttackResult | None = None
        checks: list[dict[str, Any]] = []
        x_adv = x0[0]
        success = False
        h, w = x0.shape[-2:]
        for rnd in range(1, self.rounds + 1):
            # only the pixels around the faces reach the victim: attack that crop, paste it back
            cx1, cy1, cx2, cy2 = region([self.strategy.bounds(f) for _, f in entries], w, h)
            local = [(i, shifted(f, cx1, cy1)) for i, f in entries]
            crop = x0[..., cy1:cy2, cx1:cx2].contiguous()
            victim, goal = self.strategy.victim_goal(local, refs, names, crop)
            result = run_attack(self.method, victim, goal, crop, max_iter=self.max_iter,
                                seed=self.seed, robust=transform, progress=progress)
            x_adv = x0[0].clone()
            x_adv[:, cy1:cy2, cx1:cx2] = result.x_adv[0]
            saved = save_check(x_adv[None])[0] if save_check is not None else x_adv
            checks, again = self.check(saved, faces, refs, names)
            success = all(c["protected"] for c in checks)
            if success and rob is not None:
                robust_checks, _ = self.check(reencode(*rob)(saved[None])[0], faces, refs, names)
                success = all(c["protected"] for c in robust_checks)
            if success or rnd == self.rounds:
                break
            fresh = self.strategy.retry(saved, faces, entries, checks, again)
            if not fresh:
                break  # a fresh detection shows nothing the victim does not already hold
            entries = entries + fresh
        return FaceProtection(x_adv, faces, checks, success, result, rnd, clean_emb, refs, names)

    def protect_file(self, src: Path, out_dir: Path, fmt: str = "png", quality: int = 95, robust: str = "none",
                     progress: ProgressFn | None = None) -> FaceRecord:
        """Protect one file into ``out_dir`` through :func:`jndkit.pipeline.protect_one` (written under
        a hidden name, re-read, every face judged from scratch; only a photo that passes takes its
        output name, a photo that fails leaves nothing). Errors come back in the record."""
        task = FaceTask(self, fmt, quality, robust)
        rec = protect_one(task, Path(src), output_path(Path(src), Path(out_dir), fmt), progress)
        assert isinstance(rec, FaceRecord)
        return rec


def check_face_run(paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], goal: str, fmt: str,
                   quality: int, robust: str) -> None:
    """The settings of a face run and its inputs and output folder, checked before the models load.

    Raises:
        InputError: a bad format, quality, robust setting or goal, or no image among ``paths``.
        OutputError: ``out_dir`` cannot be written.
    """
    check_output_settings(fmt, quality)
    parse_robust(robust)
    parse_face_goal(goal)
    prepare_run(paths, out_dir)


def protect_face_paths(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    goal: str = "dodge",
    gallery: Mapping[str, torch.Tensor] | str | os.PathLike[str] | None = None,
    method: str = "ddn",
    preset: str | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    fmt: str = "png",
    quality: int = 95,
    robust: str = "none",
    progress: ProgressFn | None = None,
    *,
    resume: bool = False,
    on_start: Callable[[Path, int, int], None] | None = None,
    kappa: float | None = None,
    threshold: float = SAME_PERSON_DISTANCE,
    min_prob: float = 0.9,
    rounds: int | None = None,
    protector: FaceProtector | None = None,
) -> Iterator[FaceRecord]:
    """Protect the faces in files and folders into ``out_dir``, yielding one record per photo.

    Args:
        paths: image files and folders (see :func:`jndkit.images.find_images`).
        out_dir: output folder; photos keep their stem, the suffix follows ``fmt``
            (``png``, ``jpg``, ``webp`` or ``same``).
        goal: ``dodge``, ``impersonate:NAME`` (NAME must be in the gallery) or ``hide``.
        gallery: a folder (one sub-folder or image per person, :func:`~jndkit.face.victim.build_gallery`),
            ``{name: [k,128]}`` descriptors, or ``None``.
        method, preset, max_iter, seed: the attack.
        quality: JPEG/WebP quality of the output.
        robust: ``none``, ``jpeg:Q`` or ``webp:Q``: the protection must also hold after that re-encoding.
        progress: ``progress(step, total, info)`` from the engine.
        resume: skip photos whose output exists (their earlier record is kept).
        on_start: ``on_start(path, index, count)`` before each photo.
        kappa, threshold, min_prob, rounds: see :class:`FaceProtector`.
        protector: a configured :class:`FaceProtector` (then goal, gallery, method, preset, max_iter,
            seed, kappa, threshold, min_prob and rounds are its own).

    ``report.json`` in ``out_dir`` is rewritten after every photo. Problems with one photo
    (unreadable, no face, output exists) are in its record, never raised.

    Raises:
        InputError: a bad goal/method/format/robust setting, ``impersonate`` without NAME in the
            gallery, or no image in ``paths`` (all checked before any photo is attacked).
        OutputError: ``out_dir`` cannot be written.
    """
    check_face_run(paths, out_dir, goal, fmt, quality, robust)
    protector = protector or FaceProtector(goal, gallery, method, preset, max_iter, seed, kappa=kappa,
                                           threshold=threshold, min_prob=min_prob, rounds=rounds)
    task = FaceTask(protector, fmt, quality, robust)
    for rec in run_paths(task, paths, out_dir, resume=resume, on_start=on_start, progress=progress):
        assert isinstance(rec, FaceRecord)
        yield rec
