"""Text benchmark (issue 15 part 2): share of text regions unreadable to easyocr and to Tesseract
after the upload (default x0.75 + JPEG 85), share of values above the human JND, PSNR, seconds.

Run (quiet machine, one core):
    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_text.py \
        --samples note,sticky,plate --out benchmarks/results/text.jsonl --crops docs/img

One JSON line per image (and a final ``summary`` line) is appended to ``--out``; ``--crops`` writes a
side-by-side PNG (clean | protected | difference x8) of each image's first target region.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jndkit.metrics import above_jnd, psnr  # noqa: E402
from jndkit.perception import jnd_map  # noqa: E402
from jndkit.text import TextGoalSpec, attack_text, find_regions, judge_text, load_reader  # noqa: E402
from jndkit.text.ocr import cer, easyocr_version, read_tesseract, region_reading, tesseract_version  # noqa: E402
from jndkit.text.samples import text_samples  # noqa: E402
from jndkit.transforms import get_suite  # noqa: E402


def _u8(x: torch.Tensor) -> np.ndarray:
    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _finite(v: float) -> float | None:
    return round(v, 3) if np.isfinite(v) else None


def side_by_side(clean: torch.Tensor, adv: torch.Tensor, box: tuple[int, int, int, int], path: Path) -> None:
    """clean | protected of ``box`` (grown by 6 px), each zoomed 2x (nearest neighbour, so every changed
    value shows as it is), above the |difference| x 8 of the same crop, as one PNG."""
    x0, x1, y0, y1 = box
    h, w = clean.shape[-2:]
    sl = (slice(None), slice(max(0, y0 - 6), min(h, y1 + 6)), slice(max(0, x0 - 6), min(w, x1 + 6)))
    a, b = clean[sl], adv[sl]
    d = ((b - a).abs() * 8).clamp(0, 1)
    gap = torch.ones(3, a.shape[1], 4)
    top = torch.cat([a, gap, b], dim=2)
    bottom = torch.cat([d, torch.ones(3, a.shape[1], a.shape[2] + 4)], dim=2)
    both = torch.cat([top, torch.ones(3, 4, top.shape[2]), bottom], dim=1)
    both = both.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    Image.fromarray(_u8(both)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", default="", help="comma list of sample names (default: all 16)")
    ap.add_argument("--goal", default="unreadable")
    ap.add_argument("--method", default="shield")
    ap.add_argument("--params", default="{}", help="JSON parameter overrides, e.g. '{\"strength\": 1.0}'")
    ap.add_argument("--suite", default="x0.75+jpeg85")
    ap.add_argument("--jitter", type=int, default=2)
    ap.add_argument("--detector", type=int, default=None, help="1/0: attack CRAFT too (default: attack_text's)")
    ap.add_argument("--ctc-weight", type=float, default=None)
    ap.add_argument("--craft-weight", type=float, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/text.jsonl"))
    ap.add_argument("--crops", default="", help="folder for side-by-side PNGs (docs/img)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    names = [s for s in args.samples.split(",") if s] or None
    params = json.loads(args.params)
    spec = TextGoalSpec(args.goal) if ":" not in args.goal else TextGoalSpec(*args.goal.split(":", 1))
    reader = load_reader()
    tess = shutil.which("tesseract") is not None
    env = {"easyocr": easyocr_version(), "tesseract": tesseract_version() or "not installed",
           "torch": torch.__version__, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "threads": torch.get_num_threads(), "python": platform.python_version()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name, x in text_samples(names).items():
        t0 = time.perf_counter()
        regions = find_regions(x, spec, reader)
        if not any(r.target for r in regions):
            row: dict[str, Any] = {"image": name, "status": "no-text"}
        else:
            kw: dict[str, Any] = {}
            if args.detector is not None:
                kw["detector"] = bool(args.detector)
            if args.ctc_weight is not None:
                kw["ctc_weight"] = args.ctc_weight
            if args.craft_weight is not None:
                kw["craft_weight"] = args.craft_weight
            res = attack_text(x, spec, regions=regions, method=args.method, params=params, suite=args.suite,
                              jitter=args.jitter, reader=reader, **kw)
            secs = time.perf_counter() - t0
            v = judge_text(res.image, res.regions, suite=args.suite, clean=x, tesseract=tess, reader=reader)
            tg = [d for d in v.regions if d["target"]]
            tt = [d for d in tg if d.get("tesseract_cer") is not None]
            # baseline: Tesseract on the *clean* image after the same upload (it misreads some text
            # without any protection; those regions say nothing about the attack)
            base = 0
            if tess and tt:
                up = get_suite(args.suite).for_size(*x.shape[-2:])
                xv = up[-1].apply(x) if up else x
                words = read_tesseract(xv)
                sc = (xv.shape[-1] / x.shape[-1], xv.shape[-2] / x.shape[-2])
                base = sum(cer(region_reading(words, tuple(d["box"]), sc), d["tesseract_before"]) >= 0.5 for d in tt)
            row = {"image": name, "status": "protected" if v.protected else "failed", "engine_success": res.success,
                   "iterations": res.iterations, "seconds": round(secs, 2), "strength": res.strength,
                   "changed_values": int((_u8(res.image) != _u8(x)).sum()),
                   # None: the image is unchanged (the engine keeps the best-margin image, the clean one
                   # when no step improved the goal's margin)
                   "psnr": _finite(float(psnr(x[None], res.image[None])[0])),
                   "above_jnd_chou": round(float(above_jnd(x[None], res.image[None], jnd_map(x[None], "chou"))[0]), 6),
                   "regions": len(tg), "unreadable_easyocr": sum(d["unreadable"] for d in tg),
                   "tesseract_regions": len(tt),
                   "unreadable_tesseract": sum(d["tesseract_cer"] >= 0.5 for d in tt),
                   "unreadable_tesseract_clean_upload": base, "detail": v.regions}
            if args.crops and tg:
                p = Path(args.crops) / f"text-{name}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                side_by_side(x, res.image, tuple(tg[0]["box"]), p)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "detail"}), flush=True)
    done = [r for r in rows if r["status"] != "no-text"]

    def share(a: str, b: str) -> float | None:
        n = sum(r[b] for r in done)
        return round(sum(r[a] for r in done) / n, 4) if n else None

    changed = [r["psnr"] for r in done if r["psnr"] is not None]
    summary = {"summary": True, "tag": args.tag, "method": args.method, "params": params, "goal": spec.spec,
               "detector": args.detector, "ctc_weight": args.ctc_weight, "craft_weight": args.craft_weight,
               "strength": next((r["strength"] for r in done), None),
               "suite": args.suite, "jitter": args.jitter, "images": len(done),
               "regions": sum(r["regions"] for r in done),
               "unreadable_easyocr": share("unreadable_easyocr", "regions"),
               "unreadable_tesseract": share("unreadable_tesseract", "tesseract_regions"),
               "unreadable_tesseract_clean_upload": share("unreadable_tesseract_clean_upload", "tesseract_regions"),
               "above_jnd_chou_mean": round(float(np.mean([r["above_jnd_chou"] for r in done])), 6) if done else None,
               "psnr_mean": _finite(float(np.mean(changed))) if changed else None,
               "unchanged_images": sum(r["psnr"] is None for r in done),
               "seconds_median": float(np.median([r["seconds"] for r in done])) if done else None, **env}
    print(json.dumps(summary), flush=True)
    with out.open("a") as f:
        for r in rows:
            f.write(json.dumps({"tag": args.tag, **r}) + "\n")
        f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
