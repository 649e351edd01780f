"""Protection in the world: panels, the privacy goal, the JND budget, the upload checks and ``verify``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from jndkit.attacks import get_method, run_attack
from jndkit.attacks.engine import robust_margin
from jndkit.attacks.transfer import STRENGTHS, fixed_budget, jnd_budget, project_bound, smooth
from jndkit.errors import InputError
from jndkit.goals import PanelGoal, Privacy, Untargeted, parse_goal
from jndkit.images import load_image, quantize, save_image
from jndkit.perception import jnd_map
from jndkit.perception.jnd import share_above_jnd
from jndkit.victims import ClassifierVictim, PanelVictim, load_victim, panel_members


class Linear(nn.Module):
    """Logits = W * mean colour: a closed-form victim."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) @ self.w.T


def _member(w: list[list[float]], name: str) -> ClassifierVictim:
    return ClassifierVictim(Linear(torch.tensor(w)), input_size=None, mean=(0, 0, 0), std=(1, 1, 1),
                            labels=["red", "green", "blue"], name=name)


# ---------------------------------------------------------------------------- goals
def test_privacy_margin_is_the_smaller_of_topk_and_probability() -> None:
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0]])
    g = Privacy(k=5, max_prob=0.05).bind(logits)  # clean class 0
    # clean class 0 is top-1: k-th other logit is 0.0 (classes 1..5), margin_topk = 0 - 5 = -5
    logp0 = float(logits.log_softmax(1)[0, 0])
    assert float(g.margin(logits)[0]) == pytest.approx(min(-5.0, math.log(0.05) - logp0))
    moved = torch.tensor([[-3.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0]])
    logp = float(moved.log_softmax(1)[0, 0])
    assert float(g.margin(moved)[0]) == pytest.approx(min(0.0 - (-3.0), math.log(0.05) - logp))
    assert bool(g.reached(moved)[0]) == (min(3.0, math.log(0.05) - logp) > g.kappa)


def test_privacy_is_not_reached_while_the_class_is_sixth_with_high_probability() -> None:
    # out of the top-5 but still 10 % probability: not private at max_prob 0.05
    z = torch.tensor([[math.log(0.1)] + [math.log(0.15)] * 6])
    g = Privacy(k=5, max_prob=0.05, kappa=0.0).bind(torch.tensor([[9.0] + [0.0] * 6]))
    assert float(NotInTop5Margin(g, z)) > 0
    assert not bool(g.reached(z)[0])


def NotInTop5Margin(g: Privacy, z: torch.Tensor) -> float:
    from jndkit.goals import NotInTopK

    return float(NotInTopK.margin(g, z)[0])


def test_panel_goal_needs_every_member() -> None:
    a = _member([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], "a")
    b = _member([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0.5]], "b")
    panel = PanelVictim([a, b])
    x = torch.zeros(1, 3, 4, 4)
    x[:, 0] = 0.8
    x[:, 1] = 0.2
    goal = PanelGoal(inner=Untargeted(kappa=0.05)).bind(panel(x), panel)
    # blue 0.6: member a says blue (fooled), b says 0.6*0.5=0.3 < red 0.8? no: make red lower
    y = x.clone()
    y[:, 0] = 0.5
    y[:, 2] = 0.7
    out = panel(y)
    mm = goal.member_margins(out)
    assert float(mm[0, 0]) == pytest.approx(0.7 - 0.5, abs=1e-6)   # a: blue 0.7 beats red 0.5
    assert float(mm[0, 1]) == pytest.approx(0.35 - 0.5, abs=1e-6)  # b: blue 0.35 does not
    assert not bool(goal.reached(out)[0])
    z = x.clone()
    z[:, 0] = 0.1
    z[:, 2] = 0.9
    assert bool(goal.reached(panel(z))[0])


def test_panel_goal_indexing_keeps_members_together() -> None:
    a = _member([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], "a")
    b = _member([[0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]], "b")
    panel = PanelVictim([a, b])
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    goal = PanelGoal(inner=Untargeted()).bind(panel(x), panel)
    sub = goal[torch.tensor([2, 0])]
    assert torch.equal(sub.margin(panel(x[[2, 0]])), goal.margin(panel(x))[[2, 0]])
    assert torch.equal(goal[torch.tensor([False, True, False])].margin(panel(x[1:2])), goal.margin(panel(x))[1:2])


def test_parse_goal_privacy() -> None:
    g = parse_goal("privacy")
    assert isinstance(g, Privacy) and g.k == 5 and g.max_prob == 0.1
    assert parse_goal("privacy:0.1").max_prob == 0.1  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="privacy probability"):
        parse_goal("privacy:2")


def test_panel_members_spec() -> None:
    assert panel_members("imagenet")[0] == "mobilenet_v2"
    assert panel_members("a, b") == ["a", "b"]
    with pytest.raises(InputError, match="twice"):
        panel_members("a,a")


# ---------------------------------------------------------------------------- engine pieces
def test_robust_margin_is_the_minimum_over_transforms() -> None:
    v = _member([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], "a")
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0] = 0.2
    x[0, 1] = 0.6  # green wins by 0.4 over red
    x[1, 0] = 0.9  # red
    goal = Untargeted(labels=torch.tensor([0, 0])).bind(v(x))
    swap = lambda t: t[:, [1, 0, 2]]  # noqa: E731  (a transform that swaps red and green)
    m = robust_margin(v, goal, x, [lambda t: t, swap])
    assert float(m[0]) == pytest.approx(-0.4, abs=1e-6)  # after the swap red wins again
    assert float(m[1]) == pytest.approx(float(goal.margin(v(x))[1]))  # failing sample: not transformed further


def test_smooth_keeps_the_mean_and_lowers_the_variance() -> None:
    g = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    s = smooth(g, 2.0)
    assert s.shape == g.shape
    assert float(s.mean()) == pytest.approx(float(g.mean()), abs=0.02)
    assert float(s.std()) < 0.5 * float(g.std())


def test_jnd_budget_is_whole_levels_below_the_map(photo_fn) -> None:
    x = photo_fn("coffee", 96)
    b = jnd_budget("namm")(x, {"strength": 1.5})["bound"]
    j = jnd_map(x, "namm")
    assert torch.all(b <= 1.5 * j + 1e-7)
    assert torch.all(b >= 1.5 * j - 1 / 255 - 1e-7)
    assert torch.equal(b * 255, torch.round(b * 255))
    v = torch.full_like(x, 0.5)
    p = project_bound(v, x, {}, {"bound": b})
    assert torch.all(p.abs() <= b + 1e-7)


def test_fixed_budget_on_a_crop_is_the_whole_photos(photo_fn) -> None:
    """The budget of a crop cut from the whole photo's map: inside the crop it equals ``jnd_budget`` of
    the whole photo, at the crop's edges ``jnd_budget`` of the crop alone differs (zero padding)."""
    x = photo_fn("coffee", 96)
    whole = jnd_budget("namm")(x, {"strength": 1.0})["bound"]
    crop = x[..., 16:80, 32:96]
    b = fixed_budget(whole[..., 16:80, 32:96])(crop, {})["bound"]
    assert torch.equal(b, whole[..., 16:80, 32:96])
    alone = jnd_budget("namm")(crop, {"strength": 1.0})["bound"]
    assert torch.equal(alone[..., 5:-5, 5:-5], b[..., 5:-5, 5:-5])  # NAMM reaches 5 px (measured: 4 is not enough)
    assert not torch.equal(alone[..., 4:-4, 4:-4], b[..., 4:-4, 4:-4])
    with pytest.raises(InputError, match="budget of shape"):
        fixed_budget(whole)(crop, {})


@pytest.fixture(scope="module")
def small_panel() -> PanelVictim:
    return PanelVictim([load_victim("mobilenet_v2")])


def test_shield_saved_file_never_exceeds_the_map(tmp_path, small_panel, photo_fn) -> None:
    x0 = photo_fn("chelsea", 128)
    method = get_method("shield", strength=1.0, max_iter=4)
    res = run_attack(method, small_panel, PanelGoal(inner=Privacy()), x0, seed=0)
    p = save_image(res.x_adv[0], tmp_path / "a.png")
    saved = load_image(p).rgb[None]
    bound = jnd_map(x0, "namm")
    assert float((saved - x0).abs().max()) > 0  # it did change the photo
    assert torch.all((saved - x0).abs() <= bound + 1e-6)
    assert float(share_above_jnd(x0, saved, "namm")[0]) == 0.0


def test_strength_orders_psnr(small_panel, photo_fn) -> None:
    from jndkit.metrics import psnr

    x0 = photo_fn("astronaut", 96)
    vals = []
    for name in ("invisible", "subtle", "strong"):
        m = get_method("shield", strength=STRENGTHS[name], max_iter=3, eot=0.0)
        res = run_attack(m, small_panel, PanelGoal(inner=Privacy(kappa=100.0)), x0, seed=0)  # never reached: all 3 steps
        vals.append(float(psnr(x0, res.x_adv)[0]))
    assert vals[0] > vals[1] > vals[2]


def test_share_above_jnd_counts_luma_changes_over_the_threshold() -> None:
    x0 = torch.full((1, 3, 16, 16), 64 / 255)
    # uniform 64: Chou JND 7.932 grey levels (SPECS.md worked value)
    x = x0.clone()
    x[..., 5, 5] += 8 / 255
    x[..., 6, 6] += 7 / 255
    assert float(share_above_jnd(x0, x, "chou")[0]) == pytest.approx(1 / 256)


# ---------------------------------------------------------------------------- verify
def test_verify_unprotected_copy_reports_nothing_changed(tmp_path, photo_fn) -> None:
    from jndkit.verify import verify_files

    x = photo_fn("chelsea", 160)[0]
    a = save_image(x, tmp_path / "a.png")
    b = save_image(x, tmp_path / "b.png")
    m = verify_files(a, b, {"mobilenet_v2": load_victim("mobilenet_v2")}, "jpeg85,x0.75+jpeg85")
    assert m.transforms == ["saved", "jpeg85", "x0.75+jpeg85"]
    assert not any(c.changed for c in m.cells)
    assert m.summary() == "protection holds for 0/1 models after 3/3 uploads (clean class out of the top-5 for 0/1)"
    with pytest.raises(InputError, match="differs"):
        c = save_image(photo_fn("chelsea", 128)[0], tmp_path / "c.png")
        verify_files(a, c, {"mobilenet_v2": load_victim("mobilenet_v2")}, "none")


def test_protect_records_the_matrix_that_verify_gives(tmp_path, photo_fn) -> None:
    from jndkit.protect import ProtectConfig, protect_paths
    from jndkit.verify import verify_files

    src = save_image(photo_fn("coffee", 128)[0], tmp_path / "in" / "coffee.png")
    cfg = ProtectConfig(model="mobilenet_v2", upload="jpeg85,x0.75+jpeg85", strength="strong", max_iter=30)
    recs = list(protect_paths([src], tmp_path / "out", cfg))
    assert recs[0].status == "protected", recs[0].error
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    m = verify_files(src, recs[0].output, {"mobilenet_v2": load_victim("mobilenet_v2")}, "jpeg85,x0.75+jpeg85")
    assert report["images"][0]["matrix"]["cells"] == m.to_json()["cells"]
    assert all(c.changed and not c.in_top5 for c in m.cells)


def test_a_failed_photo_leaves_nothing_under_its_name(tmp_path, photo_fn) -> None:
    from jndkit.protect import ProtectConfig, protect_paths

    src = save_image(photo_fn("coffee", 96)[0], tmp_path / "in" / "coffee.png")
    cfg = ProtectConfig(model="mobilenet_v2", upload="jpeg75", strength="0.2", max_iter=1)
    rec = list(protect_paths([src], tmp_path / "out", cfg))[0]
    assert rec.status == "failed" and rec.output is None
    assert "mobilenet_v2" in rec.error and "after " in rec.error and "--strength strong" in rec.error
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.json"]
    # --resume tries a failure again (nothing is there to skip)
    rec2 = list(protect_paths([src], tmp_path / "out", cfg, resume=True))[0]
    assert rec2.status == "failed"


def test_verify_command_prints_the_matrix_and_exit_code(tmp_path, photo_fn) -> None:
    from typer.testing import CliRunner

    from jndkit.cli import app

    x = photo_fn("coffee", 128)[0]
    a = save_image(x, tmp_path / "a.png")
    b = save_image(x, tmp_path / "b.png")
    runner = CliRunner()
    r = runner.invoke(app, ["verify", str(a), str(b), "--model", "mobilenet_v2", "--upload", "jpeg85", "--json"])
    assert r.exit_code == 1, r.output  # an unprotected copy: protection does not hold
    data = json.loads(r.stdout)
    assert data["transforms"] == ["saved", "jpeg85"] and data["models"] == ["mobilenet_v2"]
    assert [c["changed"] for c in data["cells"]] == [False, False]
    r = runner.invoke(app, ["verify", str(a), str(tmp_path / "missing.png")])
    assert r.exit_code == 1 and "missing.png" in r.output
