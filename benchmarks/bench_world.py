"""Protection in the world: leave-one-out transfer after the upload suite (issue "Protection that holds").

For each of the four offline ImageNet classifiers (the *held-out* judge), attack with the other
three and judge the protected crops with the held-out one, after every real transform of the
upload suite (Pillow), with :func:`jndkit.verify.judge_batch` (the same judge as
``jndkit verify``). A model in the attack's panel never judges transfer.

Rows: jndkit's ``shield`` (the default of ``jndkit protect``) at each strength, with each transfer
piece switched off, and the torchattacks anchors MI-FGSM, DI2-FGSM and TI-FGSM on the same panel
(mean logits of the three members) at eps 4, 8, 16/255, 10 steps, alpha eps/4.

    OMP_NUM_THREADS=2 python benchmarks/bench_world.py --rows default --n 32 --out benchmarks/results/world.jsonl
    python benchmarks/bench_world.py --table benchmarks/results/world.jsonl > docs/world_tables.md

Each (row, fold) is one JSON line appended to ``--out`` (reruns skip what is there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jndkit.attacks import get_method, run_attack
from jndkit.attacks.transfer import STRENGTHS
from jndkit.bench import evaluation_set
from jndkit.goals import PanelGoal, Privacy
from jndkit.images import decode_bytes, encode_image, quantize
from jndkit.metrics import compute_metrics
from jndkit.perception.jnd import share_above_jnd
from jndkit.transforms import get_suite
from jndkit.verify import SAVED, judge_batch
from jndkit.victims import PanelVictim, load_victim

MODELS = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
KEY = "x0.75+jpeg85"

# name -> (kind, settings)
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("shield", {"_ladder": ("invisible", "subtle")}),  # what `jndkit protect` does (--strength auto)
    "invisible": ("shield", {}),
    "subtle": ("shield", {"strength": STRENGTHS["subtle"]}),
    "strong": ("shield", {"strength": STRENGTHS["strong"]}),
    **{f"{a}-{e}": (a, {"eps": e}) for a in ("difgsm", "mifgsm", "tifgsm") for e in (4, 8)},
    "no-eot": ("shield", {"eot": 0.0}),
    "no-ti": ("shield", {"ti_sigma": 0.0}),
    "no-momentum": ("shield", {"mu": 0.0}),
    "colour": ("shield", {"grey": 0.0}),
    "mean-loss": ("shield", {"_combine": "mean"}),
    "no-suite-check": ("shield", {"_suite": "none"}),
    **{f"{a}-16": (a, {"eps": 16}) for a in ("difgsm", "mifgsm", "tifgsm")},
}


class Ensemble(nn.Module):
    """Mean logits of the members (the anchors' ensemble), input [B,3,H,W] in [0,1]."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def row_spec(row: str) -> tuple[str, dict[str, Any]]:
    """A named row, or ``shield:key=value,...`` (keys: method parameters, ``_suite``, ``_combine``,
    ``_kappa``, ``_jnd``) for exploration."""
    if row in ROWS:
        return ROWS[row]
    if row.startswith("shield:"):
        cfg: dict[str, Any] = {}
        for kv in row.split(":", 1)[1].split(";"):
            k, v = kv.split("=")
            cfg[k] = v if k in ("_suite", "_combine", "_jnd") else float(v)
        return "shield", cfg
    raise SystemExit(f"unknown row {row!r}")


def attack(row: str, panel: list[nn.Module], x0: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, float, dict]:
    kind, cfg = row_spec(row)
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    if kind == "shield":
        params = {k: v for k, v in cfg.items() if not k.startswith("_")}
        suite = get_suite(cfg.get("_suite", "social"))
        victim = PanelVictim(panel)
        goal = PanelGoal(inner=Privacy(kappa=float(cfg.get("_kappa", 0.05))),
                         combine=cfg.get("_combine", "focus"))
        robust = [t.apply for t in suite.for_size(x0.shape[-2], x0.shape[-1])]
        ladder = [STRENGTHS[n] for n in cfg.get("_ladder", ())] or [params.pop("strength", STRENGTHS["invisible"])]
        params.pop("strength", None)
        x = x0.clone()
        todo = torch.arange(x0.shape[0])
        used = torch.zeros(x0.shape[0])
        iters = torch.zeros(x0.shape[0])
        for s in ladder:  # as Protector does: the next budget only for the photos not yet protected
            method = get_method("shield", strength=s, **params)
            if "_jnd" in cfg:
                from jndkit.attacks.transfer import with_jnd_model

                method = with_jnd_model(method, cfg["_jnd"])
            res = run_attack(method, victim, goal, x0[todo], seed=seed, robust=robust)
            x[todo] = res.x_adv
            used[todo] = s
            iters[todo] = res.iterations.float()
            todo = todo[~res.success]
            if todo.numel() == 0:
                break
        info = {"engine_success": 1.0 - todo.numel() / x0.shape[0], "iterations": float(iters.mean()),
                "mean_strength": float(used.mean())}
    else:
        import torchattacks

        eps = cfg["eps"] / 255
        ens = Ensemble(panel).eval()
        cls = {"mifgsm": torchattacks.MIFGSM, "difgsm": torchattacks.DIFGSM, "tifgsm": torchattacks.TIFGSM}[kind]
        torch.manual_seed(seed)
        atk = cls(ens, eps=eps, alpha=eps / 4, steps=10)
        labels = ens(x0).argmax(1)
        x = quantize(atk(x0, labels))
    secs = (time.perf_counter() - t0) / x0.shape[0]
    # the saved file: a PNG round trip, as a user's file holds it
    x = torch.stack([decode_bytes(encode_image(xi, "png")) for xi in x])
    return x, secs, info


def run(rows: list[str], n: int, out: Path, folds: list[str]) -> None:
    victims = {m: load_victim(m) for m in MODELS}
    x0, _, names = evaluation_set(victims["mobilenet_v2"], n=n)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            d = json.loads(line)
            done.add((d["row"], d["held_out"], d["n"]))
    suite = get_suite("social")
    for row in rows:
        for held in folds:
            if (row, held, n) in done:
                continue
            panel = [victims[m] for m in MODELS if m != held]
            x, secs, info = attack(row, panel, x0)
            judged = judge_batch(x0, x, victims, suite)
            cols = [SAVED] + [t.name for t in suite.for_size(x0.shape[-2], x0.shape[-1])]
            rec: dict[str, Any] = {"row": row, "held_out": held, "n": n, "seconds_per_image": secs, **info}
            for c in cols:
                r = judged[(held, c)]
                rec[f"held_changed[{c}]"] = float(r["changed"].float().mean())
                rec[f"held_hidden[{c}]"] = float((r["changed"] & ~r["in_top5"]).float().mean())
                rec[f"held_clean_changed[{c}]"] = float(r["clean_changed"].float().mean())
            all_changed = torch.ones(n, dtype=torch.bool)
            all_hidden = torch.ones(n, dtype=torch.bool)
            for m in MODELS:
                if m == held:
                    continue
                for c in cols:
                    r = judged[(m, c)]
                    all_changed &= r["changed"]
                    all_hidden &= r["changed"] & ~r["in_top5"]
            rec["panel_changed_all"] = float(all_changed.float().mean())
            rec["panel_hidden_all"] = float(all_hidden.float().mean())
            q = compute_metrics(x0, x, names=["psnr", "ssim", "ciede2000_mean", "ciede2000_max"])
            rec["psnr"] = float(q["psnr"].mean())
            rec["ssim"] = float(q["ssim"].mean())
            rec["ciede2000_mean"] = float(q["ciede2000_mean"].mean())
            rec["ciede2000_max"] = float(q["ciede2000_max"].mean())
            rec["above_jnd_chou"] = float(share_above_jnd(x0, x, "chou").mean())
            rec["above_jnd_namm"] = float(share_above_jnd(x0, x, "namm").mean())
            rec["torch"] = torch.__version__
            rec["machine"] = f"{platform.machine()} {os.cpu_count()} cores"
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"{row:16s} held {held:20s} {KEY}: {rec[f'held_changed[{KEY}]']:.0%} "
                  f"hidden {rec[f'held_hidden[{KEY}]']:.0%}  png {rec['held_changed[saved]']:.0%}  "
                  f"panel {rec['panel_hidden_all']:.0%}  {rec['psnr']:.1f} dB  above {rec['above_jnd_chou']:.2%}  "
                  f"{secs:.2f} s/img", file=sys.stderr, flush=True)


def table(path: Path) -> str:
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    rows: dict[str, list[dict]] = {}
    for r in recs:
        rows.setdefault(r["row"], []).append(r)

    def mean(rs: list[dict], k: str) -> float:
        return sum(r[k] for r in rs) / len(rs)

    head = ("| row | folds | held-out top-1 changed, PNG | after x0.75+JPEG 85 (clean photo) | clean class out of held-out "
            "top-5, x0.75+JPEG 85 | held-out changed, worst upload | attacked panel: top-1 changed / out of top-5 after "
            "every upload | privacy goal reached (engine) | budget (x NAMM) | PSNR dB | SSIM | CIEDE2000 mean / max "
            "| above Chou JND | above NAMM JND | s / image |")
    lines = [head, "|" + "---|" * 15]
    for name in list(ROWS) + sorted(k for k in rows if k not in ROWS):
        rs = rows.get(name)
        if not rs:
            continue
        cols = [k[len("held_changed["):-1] for k in rs[0] if k.startswith("held_changed[")]
        worst = min(mean(rs, f"held_changed[{c}]") for c in cols)
        eng = f"{mean(rs, 'engine_success'):.0%}" if all("engine_success" in r for r in rs) else "—"
        strength = f"{mean(rs, 'mean_strength'):.2f}" if all("mean_strength" in r for r in rs) else "—"
        lines.append(
            f"| {name} | {len(rs)} | {mean(rs, 'held_changed[saved]'):.0%} | {mean(rs, f'held_changed[{KEY}]'):.0%} "
            f"({mean(rs, f'held_clean_changed[{KEY}]'):.0%}) | {mean(rs, f'held_hidden[{KEY}]'):.0%} | {worst:.0%} "
            f"| {mean(rs, 'panel_changed_all'):.0%} / {mean(rs, 'panel_hidden_all'):.0%} | {eng} | {strength} "
            f"| {mean(rs, 'psnr'):.2f} | {mean(rs, 'ssim'):.4f} "
            f"| {mean(rs, 'ciede2000_mean'):.2f} / {mean(rs, 'ciede2000_max'):.1f} | {mean(rs, 'above_jnd_chou'):.2%} "
            f"| {mean(rs, 'above_jnd_namm'):.2%} | {mean(rs, 'seconds_per_image'):.2f} |")
    per_t = ["", "Held-out top-1 changed after each upload transform (mean over folds; clean photo's own rate in brackets):", ""]
    first = next(iter(rows.values()))[0]
    cols = [k[len("held_changed["):-1] for k in first if k.startswith("held_changed[")]
    per_t.append("| row | " + " | ".join(cols) + " |")
    per_t.append("|" + "---|" * (len(cols) + 1))
    for name in list(ROWS) + sorted(k for k in rows if k not in ROWS):
        rs = rows.get(name)
        if rs:
            per_t.append(f"| {name} | " + " | ".join(
                f"{mean(rs, f'held_changed[{c}]'):.0%} ({mean(rs, f'held_clean_changed[{c}]'):.0%})" for c in cols) + " |")
    folds = ["", "Held-out top-1 changed after x0.75+JPEG 85, per held-out model (the attack used the other three):", ""]
    names = sorted({r["held_out"] for r in recs})
    folds.append("| row | " + " | ".join(names) + " |")
    folds.append("|" + "---|" * (len(names) + 1))
    for name in list(ROWS) + sorted(k for k in rows if k not in ROWS):
        rs = {r["held_out"]: r for r in rows.get(name, [])}
        if rs:
            folds.append(f"| {name} | " + " | ".join(
                f"{rs[h][f'held_changed[{KEY}]']:.0%}" if h in rs else "—" for h in names) + " |")
    return "\n".join(lines + per_t + folds) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="default", help=f"comma list of {', '.join(ROWS)}, or 'all'")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--folds", default=",".join(MODELS), help="held-out models (comma list)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/world.jsonl"))
    ap.add_argument("--table", type=Path, help="print the markdown tables of a results file and exit")
    a = ap.parse_args()
    if a.table:
        print(table(a.table), end="")
        return
    rows = list(ROWS) if a.rows == "all" else [r.strip() for r in a.rows.split(",")]
    for r in rows:
        row_spec(r)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    run(rows, a.n, a.out, [f.strip() for f in a.folds.split(",")])


if __name__ == "__main__":
    main()
