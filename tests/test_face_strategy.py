"""Face goals as strategies: the one parser and its registrations, and each goal's own rules
(references, kappa and rounds defaults, verdict, retry rule). No model is loaded: the rules that need
only the gallery and the fresh detection are checked on hand-made descriptors and faces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from jndkit.errors import InputError
from jndkit.face.detect import Face
from jndkit.face.goals import DEFAULT_FACE_KAPPA, DEFAULT_HIDE_KAPPA, Dodge, Impersonate
from jndkit.face.strategy import (
    _FACE_GOALS,
    DEFAULT_ROUNDS,
    HIDE_ROUNDS,
    IMPERSONATE_KAPPA,
    SELF_DODGE_KAPPA,
    DodgeStrategy,
    FaceContext,
    FaceGoalSpec,
    HideStrategy,
    ImpersonateStrategy,
    face_goal_usage,
    parse_face_goal,
    register_face_goal,
)


def _ctx(gallery: dict[str, torch.Tensor] | None = None, **kw: Any) -> FaceContext:
    args: dict[str, Any] = {"detector": None, "net": None, "gallery": gallery or {}, "threshold": 0.6, "jitter": 4,
                            "hide_stages": ("onet",), "hide_jitter": 0.06}
    args.update(kw)
    return FaceContext(**args)


def _face(x: float, lm_shift: float = 0.0) -> Face:
    return Face((x, 0.0, x + 10.0, 10.0), 0.99, torch.full((5, 2), x + lm_shift))


# ------------------------------------------------------------------------------------ parser


@pytest.mark.parametrize(("spec", "want"), [
    ("dodge", ("dodge", None)), (" Dodge ", ("dodge", None)), ("HIDE", ("hide", None)),
    ("impersonate:Biden", ("impersonate", "Biden")), ("Impersonate: Joe Biden ", ("impersonate", "Joe Biden")),
])
def test_parse_face_goal(spec: str, want: tuple[str, str | None]) -> None:
    got = parse_face_goal(spec)
    assert got == want and isinstance(got, FaceGoalSpec)
    kind, name = got  # the (kind, name) pair it always was
    assert (kind, name) == want


@pytest.mark.parametrize(("spec", "match"), [
    ("vanish", r"unknown face goal 'vanish'; use dodge, impersonate:NAME or hide"),
    ("dodge:obama", "unknown face goal"), ("impersonate", "unknown face goal"), ("impersonate :x", "unknown face goal"),
    ("", "unknown face goal"), ("impersonate:  ", r"impersonate needs a gallery identity: impersonate:NAME"),
])
def test_parse_face_goal_rejects(spec: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_face_goal(spec)


@pytest.fixture
def registry() -> Iterator[None]:
    before = dict(_FACE_GOALS)
    yield
    _FACE_GOALS.clear()
    _FACE_GOALS.update(before)


def test_a_registered_goal_is_parsed_and_built(registry: None) -> None:
    seen: list[Any] = []

    def factory(ctx: FaceContext, arg: str | None, kappa: float | None, rounds: int | None) -> Any:
        seen.append((arg, kappa, rounds))
        return HideStrategy(ctx, None, kappa, rounds)

    register_face_goal("blur", factory, argument="SIGMA", meaning="a width")
    assert face_goal_usage() == "dodge, impersonate:NAME, hide or blur:SIGMA"
    spec = parse_face_goal("Blur:2.5")
    assert spec == ("blur", "2.5")
    s = spec.build(_ctx(), 0.3, None)
    assert seen == [("2.5", 0.3, None)] and s.kappa == 0.3 and s.rounds == HIDE_ROUNDS
    with pytest.raises(InputError, match="blur needs a width: blur:SIGMA"):
        parse_face_goal("blur:")
    with pytest.raises(InputError, match="registered already"):
        register_face_goal("dodge", factory)
    with pytest.raises(InputError, match="one word"):
        register_face_goal("a:b", factory)


# ------------------------------------------------------------------------------------ strategies


def test_defaults_of_each_goal() -> None:
    g = {"obama": torch.zeros(2, 128)}
    assert (SELF_DODGE_KAPPA, IMPERSONATE_KAPPA, DEFAULT_FACE_KAPPA, DEFAULT_HIDE_KAPPA) == (0.05, 0.08, 0.05, 0.5)
    d = parse_face_goal("dodge").build(_ctx())
    assert isinstance(d, DodgeStrategy) and (d.kappa, d.rounds, d.spec) == (SELF_DODGE_KAPPA, DEFAULT_ROUNDS, "dodge")
    assert parse_face_goal("dodge").build(_ctx(g)).kappa == DEFAULT_FACE_KAPPA
    i = parse_face_goal("impersonate:obama").build(_ctx(g), None, 5)
    assert isinstance(i, ImpersonateStrategy) and (i.kappa, i.rounds, i.spec) == (IMPERSONATE_KAPPA, 5, "impersonate:obama")
    h = parse_face_goal("hide").build(_ctx(), 0.25)
    assert isinstance(h, HideStrategy) and (h.kappa, h.rounds) == (0.25, HIDE_ROUNDS) == (0.25, 8)
    with pytest.raises(InputError, match=r"impersonate:biden needs 'biden' in the gallery \(obama\)"):
        parse_face_goal("impersonate:biden").build(_ctx(g))
    with pytest.raises(InputError, match=r"\(no gallery given\)"):
        parse_face_goal("impersonate:biden").build(_ctx())


def test_references_labels_and_failure_words() -> None:
    obama = torch.zeros(2, 128)
    obama[1, 0] = 0.3
    g = {"obama": obama, "biden": torch.ones(1, 128)}
    clean = torch.zeros(2, 128)
    clean[0, 1] = 0.5  # 0.5 from Obama: known
    clean[1, 1] = 0.7  # 0.7 from Obama: a stranger to the gallery
    for s in (parse_face_goal("dodge").build(_ctx(g)), parse_face_goal("hide").build(_ctx(g))):
        refs, names = s.references(clean)
        assert names == ["obama", None]
        assert refs[0] is obama and torch.equal(refs[1], clean[1:2])
    d, h = parse_face_goal("dodge").build(_ctx(g)), parse_face_goal("hide").build(_ctx(g))
    assert [d.reference_label(n) for n in ("obama", None)] == ["obama", "self"]
    assert [h.reference_label(n) for n in ("obama", None)] == ["obama", None]
    i = parse_face_goal("impersonate:biden").build(_ctx(g))
    refs, names = i.references(clean)
    assert names == ["biden", "biden"] and all(r is g["biden"] for r in refs)
    assert (d.failure(), h.failure(), i.failure()) == ("recognised", "found", "not recognised as biden")


def test_verdict_when_the_fresh_detection_finds_no_face() -> None:
    g = {"biden": torch.ones(1, 128)}
    ref = torch.zeros(1, 128)
    assert parse_face_goal("dodge").build(_ctx(g)).verdict(torch.zeros(3, 8, 8), None, ref) == {"protected": True}
    assert parse_face_goal("impersonate:biden").build(_ctx(g)).verdict(torch.zeros(3, 8, 8), None, ref) == {"protected": False}
    h = parse_face_goal("hide").build(_ctx())
    assert h.verdict(torch.zeros(3, 8, 8), None, ref) == {"protected": True}
    assert h.verdict(torch.zeros(3, 8, 8), _face(0.0), ref) == {"protected": False}


def test_retry_adds_each_unprotected_fresh_alignment_once() -> None:
    d = parse_face_goal("dodge").build(_ctx())
    known = [(0, _face(0.0)), (1, _face(50.0))]
    again = [_face(0.0, 1.5), _face(50.0), None]  # face 0 moved, face 1 the same alignment, face 2 gone
    checks = [{"protected": False}, {"protected": False}, {"protected": False}]
    added = d.retry(torch.zeros(3, 8, 8), [], known, checks, again)
    assert len(added) == 1 and added[0][0] == 0 and torch.equal(added[0][1].landmarks, again[0].landmarks)
    checks[0]["protected"] = True  # a protected face asks for nothing
    assert d.retry(torch.zeros(3, 8, 8), [], known, checks, again) == []


def test_embedding_strategies_build_their_engine_goals_over_every_entry() -> None:
    """Impersonation judges every entry against the target; its victim holds one alignment per entry."""

    class Net(torch.nn.Module):
        def forward(self, chips: torch.Tensor) -> torch.Tensor:
            return chips.mean(dim=(2, 3)).repeat(1, 43)[:, :128]

    target = torch.randn(3, 128)
    i = parse_face_goal("impersonate:t").build(_ctx({"t": target}, net=Net()))
    lm = torch.tensor([[30.0, 30.0], [60.0, 30.0], [45.0, 45.0], [33.0, 60.0], [57.0, 60.0]])
    entries = [(0, Face((0.0, 0.0, 90.0, 90.0), 0.99, lm)), (0, Face((0.0, 0.0, 90.0, 90.0), 0.99, lm + 1))]
    victim, goal = i.victim_goal(entries, [target], ["t"], torch.rand(1, 3, 96, 96))
    assert isinstance(goal, Impersonate) and goal.kappa == IMPERSONATE_KAPPA
    assert goal.target is not None and goal.target.shape == (1, 2, 3, 128)
    assert torch.equal(goal.target[0, 1], target)
    out = victim(torch.rand(1, 3, 96, 96))
    assert out.shape == (1, 2, 128)
    d = parse_face_goal("dodge").build(_ctx(net=Net()))
    crop = torch.rand(1, 3, 96, 96)
    victim, goal = d.victim_goal(entries, [torch.zeros(1, 128)], [None], crop)
    assert isinstance(goal, Dodge) and goal.reference is not None
    torch.testing.assert_close(goal.reference[0, :, 0], victim(crop)[0])  # each entry from its own clean descriptor
