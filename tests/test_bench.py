"""The benchmark: deterministic set, saved-file success, tables that match the CSV, resume, transfer, CLI.

Most tests run on two tiny convolutional victims at 32 px (milliseconds per attack); the set,
and the CLI test, use the offline mobilenet_v2.
"""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from jndkit import bench
from jndkit.attacks import METHODS
from jndkit.bench import (
    BenchConfig,
    evaluation_set,
    judge_saved,
    read_csv,
    resolve_methods,
    run_benchmark,
    summary_table,
)
from jndkit.errors import InputError
from jndkit.images import load_image, quantize
from jndkit.victims import ClassifierVictim


def tiny_victim(seed: int, name: str) -> ClassifierVictim:
    """A small random CNN at 32 px whose logits are scaled so that its answers are confident."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 16 * 16, 10),
    )

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 20.0 * self.net(x)

    return ClassifierVictim(Scaled(), input_size=(32, 32), name=name).eval()


@pytest.fixture(scope="module")
def tinies():
    return {"tinyA": tiny_victim(0, "tinyA"), "tinyB": tiny_victim(1, "tinyB")}


def _config(**kw) -> BenchConfig:
    base = {"models": ["tinyA", "tinyB"], "methods": resolve_methods("fgsm,bim"), "n": 4, "batch_size": 3,
            "max_iter": 40, "threshold_goals": ("margin:0.25",), "threshold_methods": [("bim", "default")],
            "threshold_n": 2, "figure_methods": [("levels", "default")], "figure_images": 1, "figure_iters": 6}
    base.update(kw)
    return BenchConfig(**base)


@pytest.fixture(scope="module")
def tiny_run(tinies, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = run_benchmark(_config(), out, victims=tinies)
    return out, result


# ---------------------------------------------------------------------------------- the set
def test_evaluation_set_is_deterministic_and_labelled_by_the_model(mobilenet):
    x1, y1, n1 = evaluation_set(mobilenet, 6)
    x2, y2, n2 = evaluation_set(mobilenet, 6)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and n1 == n2
    assert x1.shape == (6, 3, 224, 224) and len(set(n1)) == 6
    assert torch.equal(x1, torch.round(x1 * 255) / 255)  # already 8-bit
    with torch.no_grad():
        probs = mobilenet(x1).softmax(1)
    assert torch.equal(probs.argmax(1), y1)
    assert bool((probs.max(1).values >= 0.5).all())


def test_evaluation_set_from_a_folder(tmp_path, tinies):
    from PIL import Image

    from jndkit.samples import sample_array

    for i, name in enumerate(["astronaut", "chelsea", "coffee"]):
        Image.fromarray(sample_array(name)).save(tmp_path / f"{i}_{name}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    x, _, names = evaluation_set(tinies["tinyA"], 3, data=tmp_path, min_confidence=0.0)
    assert names == ["0_astronaut.png", "1_chelsea.png", "2_coffee.png"]
    assert x.shape == (3, 3, 32, 32)
    with pytest.raises(InputError, match="only 3 images"):
        evaluation_set(tinies["tinyA"], 4, data=tmp_path, min_confidence=0.0)


# ---------------------------------------------------------------------------------- methods
def test_resolve_methods_covers_the_registry_and_families():
    every = resolve_methods("all")
    assert {m for m, _ in every} == set(METHODS)
    assert all(p == METHODS[m].default for m, p in every)
    assert every[0] == ("levels", "default")  # jndkit's own first
    assert {m for m, _ in resolve_methods("baselines")} == {n for n, s in METHODS.items() if s.family == "baseline"}
    assert {m for m, _ in resolve_methods("seeds")} == {n for n, s in METHODS.items() if s.family == "seed"}
    assert resolve_methods("jnd:paper-imagenet, bim, bim") == [("jnd", "paper-imagenet"), ("bim", "default")]
    with pytest.raises(InputError, match="unknown method 'nope'"):
        resolve_methods("nope")
    with pytest.raises(InputError, match="no preset 'x'"):
        resolve_methods("levels:x")


# ---------------------------------------------------------------------------------- one run
def test_rows_cover_every_model_method_and_image(tiny_run):
    out, result = tiny_run
    assert not result.errors
    keys = {(r.model, r.method) for r in result.rows}
    assert keys == {(m, k) for m in ("tinyA", "tinyB") for k in ("fgsm", "bim")}
    assert len(result.rows) == 2 * 2 * 4
    # the tiny victims fall to one signed-gradient step of 1/255 (measured: every row, saved file re-judged
    # in the next test); FGSM is one step by definition, BIM stops at its first quantized success (K <= 2)
    assert [r.success for r in result.rows] == [True] * 16
    assert {r.iterations for r in result.rows if r.method == "fgsm"} == {1}
    assert {r.iterations for r in result.rows if r.method == "bim"} <= {1, 2}
    assert {r.goal for r in result.threshold_rows} == {"margin:0.25"} and len(result.threshold_rows) == 2 * 2
    assert len(read_csv(out / "results.csv")) == len(result.rows)


def test_saved_success_in_the_csv_agrees_with_rejudging_the_files(tiny_run, tinies):
    out, _ = tiny_run
    rows = read_csv(out / "results.csv")
    for model, victim in tinies.items():
        x0, _, names = evaluation_set(victim, 4)
        clean = dict(zip(names, x0, strict=True))
        for r in (r for r in rows if r.model == model):
            saved = load_image(r.path).rgb
            ok, adv, _ = judge_saved(victim, r.goal, 0.05, clean[r.image], saved)
            assert ok == r.success, r
            assert adv == r.adv_label
            # a saved success means the victim's answer changed
            if ok:
                assert adv != r.label
            # the quality columns are measured on that file
            mse = float(((saved.double() - clean[r.image].double()) ** 2).mean())
            assert r.psnr == pytest.approx(10 * np.log10(1 / mse) if mse > 0 else float("inf"), abs=1e-4)


def _column(table: str, title: str) -> dict[tuple[str, str], float]:
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    j = head.index(title)
    out = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        m = re.match(r"(-?[\d.]+) ± ([\d.]+)", cells[j])
        if m:
            out[(cells[0], cells[1])] = float(m.group(1))
    return out


def test_markdown_means_equal_the_csv_means(tiny_run):
    out, _ = tiny_run
    rows = read_csv(out / "results.csv")
    text = (out / "tables.md").read_text()
    assert summary_table(rows) in text
    quality = bench.quality_table(rows)
    checked = 0
    for title, field, digits, table in (("PSNR dB", "psnr", 2, summary_table(rows)), ("SSIM", "ssim", 5, quality),
                                        ("UQI", "uqi", 5, quality), ("iterations K", "iterations", 1,
                                                                          summary_table(rows))):
        col = _column(table, title)
        for (model, method), shown in col.items():
            vals = [float(getattr(r, field)) for r in rows if r.model == model and r.method == method and r.success]
            assert shown == pytest.approx(round(float(np.mean(vals)), digits), abs=10 ** -digits), (title, model,
                                                                                                  method)
            checked += 1
    assert checked >= 8
    # saved success column
    for ln in summary_table(rows).splitlines()[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rs = [r for r in rows if r.model == cells[0] and r.method == cells[1]]
        assert cells[6] == f"{100 * sum(r.success for r in rs) / len(rs):.1f} %"


def test_transfer_diagonal_equals_per_model_success(tiny_run):
    out, result = tiny_run
    assert result.transfer
    for (method, _preset, _goal, _robust), m in result.transfer.items():
        for model in ("tinyA", "tinyB"):
            rs = [r for r in result.rows if r.model == model and r.method == method]
            assert m[(model, model)] == pytest.approx(sum(r.success for r in rs) / len(rs))
        assert set(m) == {(a, b) for a in ("tinyA", "tinyB") for b in ("tinyA", "tinyB")}
    with open(out / "transfer.csv") as f:
        assert len(list(csv.DictReader(f))) == 4 * len(result.transfer)


def test_confidence_figure_and_curves(tiny_run):
    out, result = tiny_run
    assert (out / "confidence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(result.curves) == 2  # one image per model
    for curves in result.curves.values():
        (c,) = curves
        assert c["method"] == "levels" and len(c["wrong"]) == len(c["true"]) == 6
        assert all(0.0 <= p <= 1.0 for p in c["wrong"] + c["true"])
        assert c["true"][0] >= 0.5  # the clean image: the model's own confident label
        # levels changes one 8-bit level per step: 6 steps leave the tiny victims' answer (log-ratio of the
        # top wrong and true probabilities <= kappa all along, measured -1.5 -> -1.4), so no JND image yet
        assert c["K"] is None
        assert max(np.log(w) - np.log(t) for w, t in zip(c["wrong"], c["true"], strict=True)) <= 0.05


@pytest.mark.parametrize(("model", "seed"), [("tinyA", 0), ("tinyB", 1)])
def test_confidence_curve_k_is_the_attack_first_saved_success(model, seed):
    """K of the curve (the method run past its success) equals K of run_attack stopping at it, and the
    first iteration whose log(p_wrong / p_true) exceeds kappa (the untargeted margin on the logits)."""
    from jndkit.attacks import get_method, run_attack
    from jndkit.goals import parse_goal

    victim = tiny_victim(seed, model)
    x0, _, _ = evaluation_set(victim, 2)
    kappa = 5.0  # high enough that BIM needs a few steps (K = 3 measured on 3 of these 4 images)
    ks = []
    for i in range(2):
        c = bench.confidence_curve(victim, x0[i], "bim", goal="untargeted", kappa=kappa, max_iter=8)
        r = run_attack(get_method("bim"), victim, parse_goal("untargeted", kappa), x0[i : i + 1], max_iter=8,
                       retries=False)
        ratio = [float(np.log(w) - np.log(t)) for w, t in zip(c["wrong"], c["true"], strict=True)]
        first = next((k for k, d in enumerate(ratio) if d > kappa), None)
        assert c["K"] == first
        assert bool(r.success[0]) == (first is not None)
        if first is not None:
            assert int(r.iterations[0]) == first
            assert float(r.margin[0]) == pytest.approx(ratio[first], abs=1e-3)
        ks.append(c["K"])
    # not a trivial K = 1 (measured: [3, 3] on tinyA, [None, 3] on tinyB with BIM's default step)
    assert any(k is not None and k >= 2 for k in ks), ks


class _Spy(nn.Module):
    """The way the curve was measured before the engine had a hook: a victim that, at every
    gradient forward, also judges the 8-bit version of its input."""

    def __init__(self, victim: nn.Module) -> None:
        super().__init__()
        self.victim = victim
        self.probs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            with torch.no_grad():
                self.probs.append(self.victim(quantize(x.detach())).softmax(1)[0])
        return self.victim(x)


@pytest.mark.parametrize("method", ["levels", "bim", "jnd"])
def test_confidence_curve_from_the_engine_hook_equals_a_spying_victim(method):
    """The curve (engine hook) is the victim's answer on every 8-bit iterate, bit for bit what a
    victim that spies on its own inputs records; for levels (on the 8-bit grid, fused check) it also
    equals the softmax of the gradient forward itself."""
    import dataclasses
    import math

    from jndkit.attacks import get_method, run_attack
    from jndkit.goals import parse_goal

    victim = tiny_victim(0, "tinyA")
    x0, _, _ = evaluation_set(victim, 1)
    c = bench.confidence_curve(victim, x0[0], method, max_iter=7)
    spy = _Spy(victim)
    never = dataclasses.replace(parse_goal("untargeted", 0.05).bind(victim(x0), victim), kappa=math.inf)
    outputs: list[torch.Tensor] = []
    run_attack(get_method(method), spy, never, x0, max_iter=7, retries=False,
               on_iteration=lambda info: outputs.append(info.outputs[0].softmax(0)))
    y = c["label"]
    assert len(c["true"]) == len(spy.probs) == 7
    assert c["true"] == [float(p[y]) for p in spy.probs]
    assert c["wrong"] == [float(torch.cat([p[:y], p[y + 1 :]]).max()) for p in spy.probs]
    with torch.no_grad():
        clean = victim(x0).softmax(1)[0]
    assert c["true"][0] == pytest.approx(float(clean[y]), abs=1e-6)  # iteration 0: the clean image
    if method == "levels":
        assert c["true"] == pytest.approx([float(p[y]) for p in outputs], abs=1e-5)
    assert max(c["wrong"]) > c["wrong"][0]  # the attack moves the answer


# ---------------------------------------------------------------------------------- resume
def test_a_rerun_does_no_attack_work_and_a_larger_set_attacks_only_new_images(tiny_run, tinies, monkeypatch):
    from jndkit.bench import runner as bench_runner

    out, first = tiny_run
    calls: list[int] = []
    real = bench_runner.run_attack

    def counting(method, victim, goal, x0, *a, **k):
        calls.append(x0.shape[0])
        return real(method, victim, goal, x0, *a, **k)

    monkeypatch.setattr(bench_runner, "run_attack", counting)
    again = run_benchmark(_config(), out, victims=tinies)
    assert calls == []
    assert [(r.model, r.method, r.image, r.success, r.psnr) for r in again.rows] == \
        [(r.model, r.method, r.image, r.success, r.psnr) for r in first.rows]
    more = run_benchmark(_config(n=5, threshold_goals=(), figure_images=0, transfer=False), out, victims=tinies)
    assert calls == [1] * 4  # one new image, for 2 models x 2 methods
    assert len(more.rows) == 2 * 2 * 5


def test_bad_config_is_an_input_error(tmp_path, tinies):
    with pytest.raises(InputError, match="robust"):
        run_benchmark(_config(robust="gif:3"), tmp_path, victims=tinies)
    with pytest.raises(InputError, match="goal"):
        run_benchmark(_config(goal="sideways"), tmp_path, victims=tinies)


# ---------------------------------------------------------------------------------- CLI
runner = CliRunner()


def test_cli_bench_quick_on_tiny_victims(tmp_path, tinies, monkeypatch):
    import jndkit.victims
    from jndkit.cli import app

    monkeypatch.setattr(jndkit.victims, "load_victim", lambda name, *a, **k: tinies[name])
    out = tmp_path / "b"
    args = ["bench", "--quick", "--models", "tinyA,tinyB", "--methods", "fgsm,bim", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| tinyA | fgsm | default | untargeted | none | 4 |" in result.output
    assert "| tinyB | bim | default | untargeted | none | 4 |" in result.output
    for f in ("results.csv", "thresholds.csv", "transfer.csv", "tables.md", "confidence.png"):
        assert (out / f).exists(), f
    text = (out / "tables.md").read_text()
    assert "seed 000 Table 3" in text and "Transfer" in text and "tinyA" in text
    thr = read_csv(out / "thresholds.csv")
    # bim only (fgsm is one step); --quick: 2 images
    assert {r.goal for r in thr} == {"margin:0.25", "margin:0.6"} and len(thr) == 2 * 2 * 2


@pytest.mark.slow
def test_cli_bench_quick_on_mobilenet(tmp_path):
    from jndkit.cli import app

    out = tmp_path / "b"
    args = ["bench", "--quick", "--models", "mobilenet_v2", "--methods", "fgsm,levels", "--images", "2",
            "--max-iter", "8", "--table3-images", "1", "--table3-methods", "levels", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| mobilenet_v2 | fgsm | default | untargeted | none | 2 |" in result.output
    for f in ("results.csv", "thresholds.csv", "tables.md", "confidence.png"):
        assert (out / f).exists(), f
    rows = read_csv(out / "results.csv")
    assert len(rows) == 4 and all(load_image(r.path).rgb.shape == (3, 224, 224) for r in rows)
    # rerun: everything comes from the cache, same table
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and again.output.split("\n")[:4] == result.output.split("\n")[:4]


def test_cli_bench_rejects_unknown_methods_and_flags(tmp_path):
    from jndkit.cli import app

    r = runner.invoke(app, ["bench", "--methods", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown method 'nope'" in r.output
    r = runner.invoke(app, ["bench", "--imagez", "3"])
    assert r.exit_code == 2


def test_ranking_lists_only_methods_at_full_saved_success(tiny_run):
    from jndkit.bench import ranking_table
    from jndkit.bench.tables import _groups

    _, result = tiny_run
    table = ranking_table(result.rows)
    full = {(k[0], k[1]) for k, rs in _groups(result.rows).items() if all(r.success for r in rs)}
    listed = {(c[0], c[3].split(":")[0]) for c in
              ([x.strip() for x in ln.strip("|").split("|")] for ln in table.splitlines()[2:])}
    assert listed == full


def test_per_method_image_caps():
    from jndkit.bench import BenchConfig, parse_method_images
    from jndkit.bench.runner import _tasks
    from jndkit.errors import InputError

    assert parse_method_images("mnd=8, hvs=4,") == {"mnd": 8, "hvs": 4}
    for bad in ("mnd", "mnd=x", "nosuch=3"):
        with pytest.raises(InputError, match=r"METHOD=N|unknown method"):
            parse_method_images(bad)
    cfg = BenchConfig(models=["m"], methods=[("levels", "default"), ("mnd", "default")], n=32,
                      threshold_goals=("margin:0.25",), threshold_methods=[("mnd", "default")], threshold_n=16,
                      method_images={"mnd": 8})
    assert _tasks(cfg, 16) == [("m", "levels", "default", "untargeted", 32), ("m", "mnd", "default", "untargeted", 8),
                               ("m", "mnd", "default", "margin:0.25", 8)]
    with pytest.raises(InputError, match="images for mnd"):
        BenchConfig(models=["m"], methods=[("mnd", "default")], method_images={"mnd": 0}).validate()


def test_package_layout_names_used_elsewhere_and_module_sizes():
    """The names the benchmark scripts and the CLI import from ``jndkit.bench`` stay there, and no
    module of the package grows past 500 lines."""
    from pathlib import Path

    import jndkit.bench as pkg

    used = ("BenchConfig", "evaluation_set", "machine_info", "parse_method_images", "read_csv", "report_markdown",
            "resolve_methods", "run_benchmark", "run_method", "saved_success", "summary_table", "write_csv")
    assert [n for n in used if not hasattr(pkg, n)] == []
    assert set(pkg.__all__) <= set(dir(pkg))
    sizes = {p.name: len(p.read_text().splitlines()) for p in Path(pkg.__file__).parent.glob("*.py")}
    assert {"datasets.py", "runner.py", "records.py", "tables.py", "plots.py"} <= set(sizes)
    assert max(sizes.values()) <= 500, sizes
