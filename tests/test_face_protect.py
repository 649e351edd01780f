"""Face privacy: goals on descriptors, per-sample victims in the engine, protection of saved photos.

The photo tests use the ``face_recognition`` 1.3.0 sdist's photos (fetched into ``.cache/face_photos``
by ``scripts/fetch_face_test_photos.py``; skipped without network) and judge the written file with
an **independent** recogniser: dlib's own pipeline (``dlib-bin``: HOG detector, 5-point shape
predictor, ``face_recognition_model_v1``), not the PyTorch port the attack differentiates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from jndkit.attacks import get_method, run_attack
from jndkit.errors import InputError
from jndkit.face import Dodge, Hide, Impersonate, stack_references
from jndkit.goals import Untargeted
from jndkit.images import load_image

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("obama", "obama2", "obama3", "biden")


# ------------------------------------------------------------------------------------ goals


def _e(*vals: float) -> torch.Tensor:
    return torch.tensor(vals, dtype=torch.float32)


def test_dodge_margin_and_reached_on_hand_made_embeddings() -> None:
    ref = torch.stack([_e(0, 0, 0), _e(1, 0, 0)])  # one identity, two descriptors
    g = Dodge(ref, threshold=0.6, kappa=0.05).bind(torch.zeros(3, 3))
    out = torch.stack([_e(0, 0.7, 0), _e(1, 0.62, 0), _e(0.5, 0, 0)])
    # nearest descriptor: 0.7, 0.62, 0.5
    torch.testing.assert_close(g.margin(out), _e(0.1, 0.02, -0.1))
    assert g.reached(out).tolist() == [True, False, False]  # 0.02 is inside the safety margin
    assert g.reached(out) .dtype == torch.bool
    sub = g[torch.tensor([2, 0])]
    torch.testing.assert_close(sub.margin(out[[2, 0]]), _e(-0.1, 0.1))


def test_dodge_defaults_to_the_clean_descriptor_and_has_a_gradient_there() -> None:
    clean = torch.tensor([[0.3, 0.4, 0.0], [1.0, 0.0, 0.0]])
    g = Dodge().bind(clean)
    torch.testing.assert_close(g.margin(clean), torch.full((2,), -0.6))
    out = clean.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(g.loss(out).sum(), out)
    # at the clean point the distance is at its minimum; the anchor offset still gives a direction
    assert (grad.norm(dim=1) > 0.5).all()
    moved = clean + 0.7 * torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert g.reached(moved).tolist() == [True, True]


def test_all_faces_of_a_photo_must_be_dodged() -> None:
    clean = torch.zeros(1, 2, 3)  # one photo, two faces
    clean[0, 1, 0] = 5.0
    g = Dodge().bind(clean)
    out = clean.clone()
    out[0, 0, 2] = 1.0  # face 0 dodged, face 1 not
    assert g.margin(out).tolist() == pytest.approx([-0.6])
    out[0, 1, 2] = 0.8
    assert g.margin(out).tolist() == pytest.approx([0.2])


def test_impersonate_margin() -> None:
    target = torch.stack([_e(1, 0, 0), _e(0, 1, 0)])
    g = Impersonate(target, kappa=0.05).bind(torch.zeros(2, 3))
    out = torch.stack([_e(1, 0.5, 0), _e(0, 1, 0.7)])
    torch.testing.assert_close(g.margin(out), _e(0.1, -0.1))
    assert g.reached(out).tolist() == [True, False]
    torch.testing.assert_close(g.loss(out), _e(0.5, 0.7))
    with pytest.raises(InputError, match="needs target descriptors"):
        Impersonate().bind(torch.zeros(1, 3))


def test_hide_margin_is_the_worst_face_and_stage() -> None:
    g = Hide(kappa=0.05).bind(torch.zeros(2, 6))
    out = torch.tensor([[-0.3, -0.2, -0.1, -0.4, -0.06, -0.5], [-0.3, 0.02, -0.1, -0.4, -0.9, -0.5]])
    torch.testing.assert_close(g.margin(out), torch.tensor([0.06, -0.02]))
    assert g.reached(out).tolist() == [True, False]
    assert float(g.loss(out)[0]) == pytest.approx(0.04 + 0.0)  # only -0.06 is within 2 kappa of zero


def test_stack_references_pads_by_repetition() -> None:
    r = stack_references([[torch.zeros(1, 3), torch.ones(2, 3)], [torch.ones(2, 3), torch.zeros(1, 3)]])
    assert r.shape == (2, 2, 2, 3)
    assert bool((r[0, 0] == 0).all()) and bool((r[1, 1] == 0).all())
    with pytest.raises(InputError, match="same number of faces"):
        stack_references([[torch.zeros(1, 3)], [torch.zeros(1, 3), torch.zeros(1, 3)]])
    with pytest.raises(InputError, match="B,F = 2,1"):
        Dodge(torch.zeros(3, 1, 1, 4)).bind(torch.zeros(2, 4))


# ------------------------------------------------------------------------------------ engine


class PerSampleVictim(nn.Module):
    """Logits ``[sum(w_b * x_b), c]``: each sample has its own weights, as a face victim has its own
    landmarks. It refuses a batch that does not match its samples, and records the rows it saw."""

    per_sample = True

    def __init__(self, w: torch.Tensor, log: list[tuple[int, ...]] | None = None, rows: tuple[int, ...] | None = None):
        super().__init__()
        self.w = w
        self.rows = rows if rows is not None else tuple(range(w.shape[0]))
        self.log = log if log is not None else []

    def __getitem__(self, idx: torch.Tensor) -> "PerSampleVictim":
        idx = idx.nonzero().flatten() if idx.dtype == torch.bool else idx.flatten()
        return PerSampleVictim(self.w[idx], self.log, tuple(self.rows[int(i)] for i in idx))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.w.shape[0]:
            raise RuntimeError(f"victim of {self.w.shape[0]} samples got {x.shape[0]}")
        self.log.append(self.rows)
        s = (self.w * x).flatten(1).sum(dim=1)
        return torch.stack([s, torch.full_like(s, 0.5)], dim=1)


@pytest.mark.parametrize("method", ["bim", "levels"])
def test_engine_indexes_per_sample_victims(method: str) -> None:
    """Samples finish at different iterations (compaction), levels also prunes; a batch gives each
    sample exactly what it gets alone, and no victim call mixes up rows."""
    torch.manual_seed(0)
    x0 = torch.round(torch.rand(3, 3, 8, 8) * 255) / 255
    w = torch.randn(3, 3, 8, 8) * torch.tensor([0.02, 0.05, 0.1]).view(3, 1, 1, 1)
    w = w + torch.sign(w) * 0.01
    base = (w * x0).flatten(1).sum(dim=1)
    w = w * (1.5 / base).view(3, 1, 1, 1)  # every clean sample is class 0 by a clear margin
    m = get_method(method, eps=0.5, alpha=1 / 255, steps=200) if method == "bim" else get_method(method, fraction=0.05, max_levels=255)
    log: list[tuple[int, ...]] = []
    res = run_attack(m, PerSampleVictim(w, log), Untargeted(kappa=0.05), x0, max_iter=200)
    assert res.success.all()
    assert len({len(r) for r in log}) > 1  # the batch did shrink
    for i in range(3):
        alone = run_attack(m, PerSampleVictim(w[i : i + 1]), Untargeted(kappa=0.05), x0[i : i + 1], max_iter=200)
        assert torch.equal(alone.x_adv[0], res.x_adv[i]), i
        assert int(alone.iterations[0]) == int(res.iterations[i])


def test_engine_leaves_ordinary_victims_alone() -> None:
    class Plain(nn.Module):
        def __getitem__(self, idx: Any) -> Any:  # an nn.Sequential-like victim must not be indexed
            raise AssertionError("indexed")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.flatten(1).mean(dim=1)
            return torch.stack([s, 1 - s], dim=1)

    x0 = torch.full((2, 3, 4, 4), 0.8)
    x0[1] = 0.9
    res = run_attack(get_method("bim", eps=0.5, alpha=2 / 255, steps=100), Plain(), Untargeted(), x0, max_iter=100)
    assert res.success.all() and res.iterations[0] < res.iterations[1]


# ------------------------------------------------------------------------------------ photos


# `photo_paths` (the face_recognition 1.3.0 sdist photos, fetched once into .cache) is in conftest.py


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any]:
    pytest.importorskip("facenet_pytorch")
    from jndkit.errors import WeightsNotFoundError
    from jndkit.face import FaceDetector, load_dlib_face_net

    try:
        return FaceDetector(), load_dlib_face_net()
    except WeightsNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def dlib_recogniser() -> Any:
    """dlib's own pipeline, as ``face_recognition.face_encodings``: image path or [3,H,W] -> descriptors."""
    dlib = pytest.importorskip("dlib")
    from jndkit.face import find_dlib_face_model

    folder = find_dlib_face_model().parent
    hog = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))

    def encode(image: Path | torch.Tensor) -> list[np.ndarray]:
        x = load_image(image).rgb if isinstance(image, Path) else image
        img = np.ascontiguousarray(torch.round(x * 255).to(torch.uint8).permute(1, 2, 0).numpy())
        return [np.array(rec.compute_face_descriptor(img, sp(img, d))) for d in hog(img, 1)]

    return encode


def _protect(paths: list[Path], out: Path, models: tuple[Any, Any], **kw: Any) -> list[Any]:
    from jndkit.face import FaceProtector, protect_face_paths

    det, net = models
    names = ("goal", "gallery", "method", "max_iter")
    prot = FaceProtector(**{k: kw.pop(k) for k in names if k in kw}, detector=det, net=net)
    return list(protect_face_paths(paths, out, protector=prot, **kw))


def test_dodging_holds_on_the_saved_photo_for_an_independent_recogniser(
    tmp_path: Path, photo_paths: dict[str, Path], models: tuple[Any, Any], dlib_recogniser: Any
) -> None:
    """dlib's own pipeline matches obama.jpg to obama2/obama3 (0.35, 0.33); after protection (written
    as PNG, re-read) it no longer does (distance >= 0.6), while PSNR stays high."""
    ref = [dlib_recogniser(photo_paths[n])[0] for n in ("obama2", "obama3")]
    clean = dlib_recogniser(photo_paths["obama"])
    assert len(clean) == 1 and all(np.linalg.norm(clean[0] - r) < 0.4 for r in ref)

    (rec,) = _protect([photo_paths["obama"]], tmp_path / "out", models, method="ddn")
    assert rec.status == "protected", rec.to_json()
    saved = Path(rec.output)
    assert saved.suffix == ".png" and load_image(saved).size == (910, 1137)
    after = dlib_recogniser(saved)
    assert len(after) == 1  # still a face to people and to dlib's detector ...
    dist = [float(np.linalg.norm(after[0] - r)) for r in ref]
    assert min(dist) >= 0.6, dist  # ... but not Obama any more
    face = rec.faces[0]
    assert face["detected_after"] and face["protected"] and face["distance_after"] >= 0.6
    assert rec.psnr > 50 and rec.psnr_faces > 38 and rec.changed_values < 0.1 * 3 * 910 * 1137
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["summary"]["protected"] == 1 and report["images"][0]["faces"][0]["protected"]


def test_no_face_is_reported_and_nothing_written(tmp_path: Path, models: tuple[Any, Any]) -> None:
    from PIL import Image

    src = tmp_path / "wall.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(src)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    recs = _protect([src, bad], tmp_path / "out", models)
    assert [r.status for r in recs] == ["no-face", "error"]
    assert "no face detected" in recs[0].error and recs[0].output is None
    assert not (tmp_path / "out" / "wall.png").exists()
    from jndkit.face import summarise

    s = summarise(recs)
    assert s["no_face"] == 1 and s["errors"] == 1 and s["success_rate"] == 0.0


def test_impersonate_needs_the_name_in_the_gallery(models: tuple[Any, Any]) -> None:
    from jndkit.face import FaceProtector

    det, net = models
    with pytest.raises(InputError, match="needs 'biden' in the gallery"):
        FaceProtector("impersonate:biden", {"obama": torch.zeros(1, 128)}, detector=det, net=net)
    with pytest.raises(InputError, match="unknown face goal"):
        FaceProtector("vanish", detector=det, net=net)


@pytest.mark.slow
def test_impersonation_of_biden_by_obama_holds_for_dlib(
    tmp_path: Path, photo_paths: dict[str, Path], models: tuple[Any, Any], dlib_recogniser: Any
) -> None:
    """The gallery holds biden.jpg; the protected obama.jpg, written and re-read, is Biden to dlib's
    own pipeline (distance < 0.6 to dlib's descriptor of biden.jpg; clean: 0.84)."""
    from jndkit.face import embed_faces

    det, net = models
    biden = load_image(photo_paths["biden"]).rgb
    gallery = {"biden": embed_faces(biden, det.detect(biden, min_prob=0.9)[:1], net)}
    (rec,) = _protect([photo_paths["obama"]], tmp_path / "out", models, goal="impersonate:biden", gallery=gallery,
                      method="ddn")
    assert rec.status == "protected", rec.to_json()
    assert rec.faces[0]["identity_after"] == "biden" and rec.faces[0]["distance_after"] < 0.6
    target = dlib_recogniser(photo_paths["biden"])[0]
    after = dlib_recogniser(Path(rec.output))
    assert len(after) == 1
    assert float(np.linalg.norm(after[0] - target)) < 0.6


def test_dodge_measures_each_alignment_from_its_own_clean_descriptor(photo_paths: dict[str, Path],
                                                                    models: tuple[Any, Any]) -> None:
    """Without a gallery, every alignment of a face starts at distance 0 from its reference (its own
    clean descriptor); a gallery identity is one reference for all of them."""
    from jndkit.face import FaceProtector, embed_faces
    from jndkit.face.boxes import jitter_landmarks
    from jndkit.face.detect import Face
    from jndkit.images import quantize

    det, net = models
    x = quantize(load_image(photo_paths["obama"]).rgb)
    (face,) = det.detect(x, min_prob=0.9)
    entries = [(0, Face(face.box, face.prob, lm)) for lm in jitter_landmarks(face.landmarks, 4)]
    clean = embed_faces(x, [face], net)  # [1,128], the base alignment
    prot = FaceProtector("dodge", method="ddn", detector=det, net=net)
    with torch.no_grad():
        victim, goal = prot.strategy.victim_goal(entries, [clean], [None], x[None])
        out = victim(x[None])
        own = goal.bind(out).distances(out)[0]
        victim, goal = prot.strategy.victim_goal(entries, [clean], ["obama"], x[None])
        shared = goal.bind(out).distances(out)[0]
    assert own.shape == (5,) and float(own.abs().max()) < 1e-4
    # the base alignment is the reference itself (up to dlib's 8-bit chip, which embed_faces keeps) ...
    assert float(shared[0]) < 0.01
    assert float(shared[1:].min()) > 0.05  # ... the others are moved by the alignment alone (0.10-0.14)


def test_a_failed_attack_writes_nothing_and_resume_tries_it_again(
    tmp_path: Path, photo_paths: dict[str, Path], models: tuple[Any, Any]
) -> None:
    """Issue 12 item 2: only a verified protected photo takes the output name. One ``levels`` step
    cannot dodge the gallery (obama2.jpg stays 0.2 from Obama), so the record says ``failed``, the
    output folder holds nothing but the report (no best attempt, no temporary file), and ``resume``
    attacks the photo again instead of counting it as done."""
    from PIL import Image

    from jndkit.face import FaceProtector, embed_faces, protect_face_paths

    det, net = models
    x = load_image(photo_paths["obama2"]).rgb
    (face,) = det.detect(x, min_prob=0.9)
    gallery = {"obama": embed_faces(x, [face], net)}
    b = [int(v) for v in face.box]
    crop = x[:, max(0, b[1] - 60) : b[3] + 60, max(0, b[0] - 60) : b[2] + 60]
    src = tmp_path / "in" / "obama2.png"
    src.parent.mkdir()
    Image.fromarray(torch.round(crop * 255).to(torch.uint8).permute(1, 2, 0).numpy()).save(src)
    out = tmp_path / "out"
    prot = FaceProtector("dodge", gallery, "levels", max_iter=1, rounds=1, detector=det, net=net)
    for attempt in range(2):
        (rec,) = protect_face_paths([src], out, protector=prot, resume=attempt == 1)
        assert rec.status == "failed", rec.to_json()
        assert rec.output is None and "nothing written" in str(rec.error)
        assert rec.faces[0]["protected"] is False and rec.faces[0]["identity_after"] == "obama"
        assert rec.faces[0]["distance_after"] < 0.6 and rec.iterations == 1
        assert sorted(p.name for p in out.iterdir()) == ["report.json"]
        report = json.loads((out / "report.json").read_text())
        assert report["summary"]["failed"] == 1 and report["summary"]["skipped"] == 0
        assert report["images"][0]["output"] is None
