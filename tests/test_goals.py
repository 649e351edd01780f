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
