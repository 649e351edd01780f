import math

import pytest
import torch

from jndkit.errors import InputError
from jndkit.goals import (
    ConfidenceMargin,
    LeastLikely,
    NotInTopK,
    RelativeMargin,
    Targeted,
    Untargeted,
    parse_goal,
)

CLEAN = torch.tensor([[5.0, 1.0, 0.0, -2.0, 3.0, -1.0, 2.0], [0.0, 4.0, 1.0, 2.0, -3.0, 0.5, 0.2]])


def test_untargeted_margin_and_reached():
    g = Untargeted(kappa=0.05).bind(CLEAN)
    assert g.labels.tolist() == [0, 1]
    z = torch.tensor([[3.0, 3.04, 0, 0, 0, 0, 0], [0.0, 1.0, 1.2, 0, 0, 0, 0]])
    assert torch.allclose(g.margin(z), torch.tensor([0.04, 0.2]))
    assert g.reached(z).tolist() == [False, True]  # 0.04 is below kappa


def test_untargeted_given_labels_and_loss():
    g = Untargeted(labels=torch.tensor([2, 2])).bind(CLEAN)
    assert g.labels.tolist() == [2, 2]
    assert torch.allclose(g.loss(CLEAN), CLEAN.log_softmax(1)[:, 2])


def test_targeted_and_least_likely():
    g = Targeted(target=4).bind(CLEAN)
    z = torch.tensor([[0, 0, 0, 0, 2.0, 1.0, 0], [0, 3.0, 0, 0, 2.5, 0, 0]])
    assert torch.allclose(g.margin(z), torch.tensor([1.0, -0.5]))
    ll = LeastLikely().bind(CLEAN)
    assert ll.target.tolist() == [3, 4]
    assert torch.allclose(ll.loss(CLEAN), torch.nn.functional.cross_entropy(CLEAN, torch.tensor([3, 4]), reduction="none"))


def test_not_in_top5():
    g = NotInTopK(k=5, kappa=0.0).bind(CLEAN)
    # sample 0: true class 0 with logit 1.5 has five others above it -> reached by 0.5
    z = torch.tensor([[1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0], [0.0, 4.0, 5.0, 6.0, 7.0, 8.0, 3.0]])
    assert torch.allclose(g.margin(z), torch.tensor([0.5, -1.0]))
    assert g.reached(z).tolist() == [True, False]


def test_confidence_margin():
    g = ConfidenceMargin(confidence=0.6, kappa=0.0).bind(CLEAN[:1])
    z = torch.tensor([[0.0, math.log(9.0), -50, -50, -50, -50, -50]])  # p1 = 0.9
    assert g.reached(z).tolist() == [True]
    z2 = torch.tensor([[0.0, math.log(1.2), -50, -50, -50, -50, -50]])  # flip, but p1 = 0.545 < 0.6
    assert g.reached(z2).tolist() == [False]
    assert float(g.margin(z2)) == pytest.approx(math.log(1.2 / 2.2) - math.log(0.6), abs=1e-5)


def test_relative_margin():
    g = RelativeMargin(gap=0.5, kappa=0.0).bind(CLEAN[:1])
    ok = torch.tensor([[0.0, math.log(2.5), -50, -50, -50, -50, -50]])  # p_y = 0.4 p_top
    bad = torch.tensor([[0.0, math.log(1.5), -50, -50, -50, -50, -50]])  # p_y = 0.67 p_top
    assert g.reached(ok).tolist() == [True] and g.reached(bad).tolist() == [False]


def test_indexing_keeps_per_sample_labels():
    g = Untargeted().bind(CLEAN)
    assert g[torch.tensor([1])].labels.tolist() == [1]


def test_unbound_goal_is_an_error():
    with pytest.raises(InputError, match="bound"):
        Untargeted().margin(CLEAN)


@pytest.mark.parametrize("spec,cls", [("untargeted", Untargeted), ("least-likely", LeastLikely), ("top5", NotInTopK),
                                      ("targeted:3", Targeted), ("margin:0.5", ConfidenceMargin)])
def test_parse_goal(spec, cls):
    assert type(parse_goal(spec)) is cls


@pytest.mark.parametrize("spec", ["sideways", "targeted:", "margin:2"])
def test_parse_goal_errors(spec):
    with pytest.raises(InputError):
        parse_goal(spec)


def test_untargeted_given_class_by_name_or_index(mobilenet):
    g = parse_goal("untargeted:espresso").bind(torch.zeros(2, 1000), mobilenet)
    assert g.labels.tolist() == [967, 967]
    assert parse_goal("untargeted:3").bind(torch.zeros(1, 1000)).labels.tolist() == [3]
    with pytest.raises(InputError, match="unknown class"):
        parse_goal("untargeted:espressso").bind(torch.zeros(1, 1000), mobilenet)


# ------------------------------------------------------------------------------------ registry


@pytest.fixture
def registry():
    from jndkit.goals import _REGISTRY

    before = {task: dict(table) for task, table in _REGISTRY.items()}
    yield
    for task in list(_REGISTRY):
        _REGISTRY[task].clear()
        _REGISTRY[task].update(before.get(task, {}))


def test_registered_goal_comes_before_the_builtins_and_keeps_its_argument(registry):
    from jndkit.goals import goal_usage, register_goal

    seen = []

    def hinge(arg, kappa):
        seen.append((arg, kappa))
        return ConfidenceMargin(kappa=kappa, confidence=float(arg))

    register_goal("Hinge", hinge, argument="C", meaning="a confidence")
    g = parse_goal(" HINGE: 0.25 ", 0.3)
    assert type(g) is ConfidenceMargin and (g.confidence, g.kappa) == (0.25, 0.3) and seen == [("0.25", 0.3)]
    with pytest.raises(InputError, match=r"^hinge needs a confidence: hinge:C$"):
        parse_goal("hinge:")
    assert goal_usage().endswith("margin:C, relative:G or hinge:C")
    with pytest.raises(InputError, match=r"unknown goal 'hinge'; use privacy, .* relative:G or hinge:C$"):
        parse_goal("hinge")  # registered with an argument: the bare word is no goal
    register_goal("top5", lambda arg, kappa: Untargeted(kappa=kappa))  # a registration shadows a built-in
    assert type(parse_goal("top5")) is Untargeted and type(parse_goal("top3")) is NotInTopK
    with pytest.raises(InputError, match="classify goal 'hinge' is registered already"):
        register_goal("hinge", hinge)
    with pytest.raises(InputError, match="one word"):
        register_goal("a b", hinge)


def test_registries_are_per_task(registry):
    from jndkit.goals import register_goal

    # a task of its own: the real detect task (jndkit.detect) registers "vanish" when it is imported
    register_goal("vanish", lambda arg, kappa: ("vanish", arg, kappa), task="sonar")
    assert parse_goal("Vanish", 0.2, task="sonar") == ("vanish", None, 0.2)
    with pytest.raises(InputError, match=r"^unknown sonar goal 'untargeted'; use vanish$"):
        parse_goal("untargeted", task="sonar")  # the built-ins are classifier goals only
    with pytest.raises(InputError, match=r"^unknown goal 'vanish'; use privacy, privacy:P, .* or relative:G$"):
        parse_goal("vanish")
    with pytest.raises(InputError, match="no goal is registered"):
        parse_goal("x", task="ocr")


def test_face_goals_live_in_the_registry():
    from jndkit.face.strategy import _FACE_GOALS, FaceGoalSpec
    from jndkit.goals import goal_registry

    assert _FACE_GOALS is goal_registry("face") and list(_FACE_GOALS)[:3] == ["dodge", "impersonate", "hide"]
    assert parse_goal("Impersonate: Joe Biden ", task="face") == FaceGoalSpec("impersonate", "Joe Biden")
    with pytest.raises(InputError, match=r"^unknown face goal 'privacy'; use dodge, impersonate:NAME or hide$"):
        parse_goal("privacy", task="face")
