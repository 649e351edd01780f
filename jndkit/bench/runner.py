"""Running a benchmark: every method over the evaluation set, success judged on the saved file.

Each method runs through the one engine; every adversarial image is then written as PNG,
read back from the file (and re-encoded as JPEG when asked), and judged by the victim at
batch size 1. The quality metrics are computed on the image read back from the file.

:func:`run_benchmark` runs a whole benchmark into a folder, reusing finished rows (one
cache per model, method, preset, goal and robustness setting, one row per image), and
writes the CSVs (:mod:`.records`), the tables (:mod:`.tables`) and Figure 4 (:mod:`.plots`).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..attacks import METHODS, get_method, run_attack
from ..goals import DEFAULT_KAPPA, parse_goal
from ..images import decode_bytes, encode_image
from ..pipeline.files import write_and_reread
from ..victims import ClassifierVictim
from .config import BenchConfig, BenchResult, ProgressFn
from .datasets import evaluation_set, image_hash
from .plots import confidence_figure
from .records import (
    ROW_METRICS,
    BenchRow,
    _settings,
    _slug,
    cache_name,
    machine_info,
    read_csv,
    write_csv,
    write_transfer_csv,
)
from .tables import report_markdown


def _robust_transform(robust: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    from ..protect import parse_robust, reencode

    rob = parse_robust(robust)
    return reencode(*rob) if rob else None


@torch.no_grad()
def judge_saved(victim: nn.Module, goal_spec: str, kappa: float, x0: torch.Tensor, saved: torch.Tensor,
                robust: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[bool, int, float]:
    """Judge one decoded image ``saved`` ``[3,H,W]`` at batch size 1 against the goal bound to its
    clean image ``x0`` ``[3,H,W]`` (after ``robust`` when given).

    Returns:
        ``(reached, predicted class, probability of the top wrong class)``.
    """
    clean = victim(x0[None])
    goal = parse_goal(goal_spec, kappa).bind(clean, victim)
    s = saved[None]
    if robust is not None:
        s = robust(s)
    out = victim(s)
    p = out.softmax(1)[0]
    y = int(clean.argmax(1)[0])
    wrong = torch.cat([p[:y], p[y + 1 :]]).max()
    return bool(goal.reached(out)[0]), int(out.argmax(1)[0]), float(wrong)


def saved_success(victim: ClassifierVictim, goal_spec: str, kappa: float, x0: torch.Tensor, x_adv: torch.Tensor,
                  robust: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[bool]:
    """Encode each adversarial image as PNG, decode it, optionally re-encode (``robust``) and judge
    it at batch size 1 against the goal bound to its clean image."""
    return [judge_saved(victim, goal_spec, kappa, x0[i], decode_bytes(encode_image(x_adv[i], "png")), robust)[0]
            for i in range(x0.shape[0])]


def warm_up(victim: nn.Module, x: torch.Tensor) -> None:
    """One forward and backward pass, so that the first timed attack does not pay for allocation."""
    v = x[:2].clone().requires_grad_(True)
    with torch.enable_grad():
        victim(v).logsumexp(1).sum().backward()


def run_method(victim: ClassifierVictim, x0: torch.Tensor, names: Sequence[str], method: str, preset: str | None,
               goal: str = "untargeted", kappa: float = DEFAULT_KAPPA, robust: str = "none", seed: int = 0,
               batch_size: int = 16, max_iter: int | None = None, out_dir: str | os.PathLike[str] | None = None,
               jnd: torch.Tensor | None = None, on_image: Callable[[int], None] | None = None) -> list[BenchRow]:
    """Run one method over the set in batches, write each adversarial image as PNG and measure the file.

    Args:
        victim, x0, names: the evaluation set ``[n,3,S,S]`` and its image names.
        method, preset: a registered method (``None``: its default preset).
        goal, kappa: the goal (CLI spelling) and its success margin.
        robust: ``none`` or ``jpeg:Q`` / ``webp:Q``: success must also survive that re-encoding.
        batch_size: images per engine call.
        max_iter: iteration budget (``None``: the method's).
        out_dir: where the PNGs go (``<out_dir>/<image>.png``); ``None`` keeps them in memory only.
        jnd: human JND maps ``[n,3,S,S]`` for ``above_jnd`` (``None``: computed with NAMM).
        on_image: called with the number of images just finished (for progress bars).
    """
    from .. import metrics
    from ..perception import jnd_map

    preset = preset or METHODS[method].default
    m = get_method(method, preset)
    transform = _robust_transform(robust)
    if jnd is None:
        jnd = jnd_map(x0, "namm")
    settings = _settings(kappa, seed, max_iter)
    rows: list[BenchRow] = []
    for start in range(0, x0.shape[0], batch_size):
        xb = x0[start : start + batch_size]
        res = run_attack(m, victim, parse_goal(goal, kappa), xb, max_iter=max_iter, seed=seed, robust=transform)
        saved_list = []
        paths = []
        for j in range(xb.shape[0]):
            path = ""
            if out_dir is not None:  # judge what the file holds: the pipeline's one write -> re-read
                p = Path(out_dir) / f"{_slug(names[start + j])}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                saved_list.append(write_and_reread(res.x_adv[j], p, overwrite=True).rgb)
                path = str(p)
            else:
                saved_list.append(decode_bytes(encode_image(res.x_adv[j], "png")))
            paths.append(path)
        saved = torch.stack(saved_list)
        vals = metrics.compute_metrics(xb, saved, names=list(ROW_METRICS), jnd=jnd[start : start + batch_size])
        for j in range(xb.shape[0]):
            ok, adv, conf = judge_saved(victim, goal, kappa, xb[j], saved[j], transform)
            rows.append(BenchRow(
                model=victim.name, method=method, preset=preset, goal=goal, robust=robust, image=names[start + j],
                success=ok, success_engine=bool(res.success[j]), iterations=int(res.iterations[j]),
                seconds=float(res.seconds), label=_label(victim, xb[j]),
                adv_label=adv, confidence=conf, image_hash=image_hash(xb[j]), settings=settings, path=paths[j],
                **{k: float(vals[k][j]) for k in ROW_METRICS}))
        if on_image is not None:
            on_image(xb.shape[0])
    return rows


@torch.no_grad()
def _label(victim: nn.Module, x: torch.Tensor) -> int:
    return int(victim(x[None]).argmax(1)[0])


# ----------------------------------------------------------------------------------
# Cached runs (resumable per model, method, preset, goal, robust and image)
# ----------------------------------------------------------------------------------
def run_cached(victim: ClassifierVictim, x0: torch.Tensor, names: Sequence[str], method: str, preset: str,
               goal: str, robust: str, out: str | os.PathLike[str], kappa: float = DEFAULT_KAPPA, seed: int = 0,
               batch_size: int = 16, max_iter: int | None = None, jnd: torch.Tensor | None = None,
               on_image: Callable[[int], None] | None = None) -> list[BenchRow]:
    """:func:`run_method` with a per-image cache under ``out``.

    Rows live in ``<out>/rows/<model>/<combination>.csv`` and images in
    ``<out>/images/<model>/<combination>/``. A row is reused when its image has the same
    content (``image_hash``), the same settings (kappa, seed, budget) and its PNG is still
    there; only the other images are attacked. The CSV is rewritten after every batch, so an
    interrupted run loses at most one batch.
    """
    combo = cache_name(victim.name, method, preset, goal, robust)
    csv_path = Path(out) / "rows" / _slug(victim.name) / f"{combo}.csv"
    img_dir = Path(out) / "images" / _slug(victim.name) / combo
    settings = _settings(kappa, seed, max_iter)
    done: dict[str, BenchRow] = {}
    if csv_path.exists():
        for r in read_csv(csv_path):
            if r.settings == settings and (not r.path or Path(r.path).exists()):
                done[r.image] = r
    hashes = [image_hash(x) for x in x0]
    todo = [i for i, (nm, h) in enumerate(zip(names, hashes, strict=True))
            if nm not in done or done[nm].image_hash != h]
    if len(todo) < len(names) and on_image is not None:
        on_image(len(names) - len(todo))
    if todo:
        from ..perception import jnd_map

        jnd_all = jnd if jnd is not None else jnd_map(x0, "namm")
        for start in range(0, len(todo), batch_size):
            idx = todo[start : start + batch_size]
            sel = torch.tensor(idx)
            new = run_method(victim, x0[sel], [names[i] for i in idx], method, preset, goal=goal, kappa=kappa,
                             robust=robust, seed=seed, batch_size=batch_size, max_iter=max_iter, out_dir=img_dir,
                             jnd=jnd_all[sel], on_image=on_image)
            for r in new:
                done[r.image] = r
            write_csv([done[n] for n in names if n in done] + [r for k, r in done.items() if k not in names],
                      csv_path)
    return [done[n] for n in names]


# ----------------------------------------------------------------------------------
# Transfer
# ----------------------------------------------------------------------------------
def transfer_matrix(rows: Sequence[BenchRow], victims: Mapping[str, nn.Module],
                    clean: dict[str, dict[str, torch.Tensor]],
                    kappa: float = DEFAULT_KAPPA) -> dict[tuple[str, str, str, str], dict[tuple[str, str], float]]:
    """Saved success of images protected against model A, judged by model B.

    Args:
        rows: benchmark rows with their PNG ``path``.
        victims: model name -> victim.
        clean: model name -> image name -> clean image ``[3,H,W]`` (the set of that model).

    Returns:
        ``{(method, preset, goal, robust): {(A, B): fraction}}``. B's goal is bound to B's own
        answer on the clean image; the file is read back and re-encoded as the row's ``robust``
        says, as for the per-model success (so the diagonal equals it).
    """
    out: dict[tuple[str, str, str, str], dict[tuple[str, str], float]] = {}
    groups: dict[tuple[str, str, str, str, str], list[BenchRow]] = {}
    for r in rows:
        if r.path and r.model in victims:
            groups.setdefault((r.model, r.method, r.preset, r.goal, r.robust), []).append(r)
    for (a, method, preset, goal, robust), rs in groups.items():
        transform = _robust_transform(robust)
        saved = [decode_bytes(Path(r.path).read_bytes()) for r in rs]
        for b, vb in victims.items():
            ok = [judge_saved(vb, goal, kappa, clean[a][r.image], s, transform)[0]
                  for r, s in zip(rs, saved, strict=True)]
            out.setdefault((method, preset, goal, robust), {})[(a, b)] = sum(ok) / len(ok)
    return out



def _tasks(config: BenchConfig, n_threshold: int) -> list[tuple[str, str, str, str, int]]:
    """(model, method, preset, goal, images) for every attack run of the benchmark."""
    tasks = []
    for model in config.models:
        for m, p in config.methods:
            tasks.append((model, m, p, config.goal, min(config.n, config.method_images.get(m, config.n))))
        for g in config.threshold_goals:
            for m, p in config.table3_methods():
                tasks.append((model, m, p, g, min(n_threshold, config.method_images.get(m, n_threshold))))
    return tasks


def _prepare_model(model: str, config: BenchConfig, victims: dict[str, ClassifierVictim] | None
                   ) -> tuple[ClassifierVictim, torch.Tensor, list[str], torch.Tensor]:
    from ..perception import jnd_map
    from ..victims import load_victim

    victim = victims[model] if victims and model in victims else load_victim(model)
    victim.eval()
    x0, _, names = evaluation_set(victim, config.n, data=config.data)
    return victim, x0, names, jnd_map(x0, "namm")


def _worker(config: BenchConfig, out: str, task: tuple[str, str, str, str, int]) -> str:
    """Run one task in a worker process (one torch thread); returns an error line or ''."""
    torch.set_num_threads(1)
    model, m, p, g, k = task
    try:
        victim, x0, names, jnd = _prepare_model(model, config, None)
        warm_up(victim, x0)
        run_cached(victim, x0[:k], names[:k], m, p, g, config.robust, out, kappa=config.kappa, seed=config.seed,
                   batch_size=config.batch_size, max_iter=config.max_iter, jnd=jnd[:k])
        return ""
    except Exception as e:  # noqa: BLE001 - a method that breaks must not stop the others; reported by the caller
        return f"{model} {m}:{p} {g}: {type(e).__name__}: {e}"


def run_benchmark(config: BenchConfig, out: str | os.PathLike[str], progress: ProgressFn | None = None,
                  victims: dict[str, ClassifierVictim] | None = None) -> BenchResult:
    """Run (or resume) a benchmark into folder ``out`` and write its CSVs, tables and figure.

    Files: ``results.csv`` (one row per model, method and image), ``thresholds.csv`` (Table 3),
    ``transfer.csv``, ``curves.json`` and ``confidence.png`` (Figure 4), ``tables.md``, and the
    caches ``rows/`` and ``images/`` that make a rerun reuse every finished image.

    A method that raises is reported in ``errors`` and left out; the others go on.
    """
    config.validate()
    t_start = time.perf_counter()
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    n_thr = config.n if config.threshold_n is None else min(config.n, config.threshold_n)
    tasks = _tasks(config, n_thr)
    total = sum(t[4] for t in tasks)
    done = 0
    errors: list[str] = []

    def tick(k: int, what: str) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(done, total, what)

    if config.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=config.jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_worker, config, str(outp), t): t for t in tasks}
            for f in as_completed(futs):
                t = futs[f]
                msg = f.result()
                if msg:
                    errors.append(msg)
                tick(t[4], f"{t[0]} {t[1]} {t[3]}")
        done = 0  # the collection pass below finds every row in the cache

    rows: list[BenchRow] = []
    thr_rows: list[BenchRow] = []
    prepared: dict[str, tuple[ClassifierVictim, torch.Tensor, list[str], torch.Tensor]] = {}
    for model in config.models:
        victim, x0, names, jnd = prepared[model] = _prepare_model(model, config, victims)
        warm_up(victim, x0)
        for _model, m, p, g, k in [t for t in tasks if t[0] == model]:
            on_image = functools.partial(tick, what=f"{model} {m} {g}") if config.jobs == 1 else None
            try:
                part = run_cached(victim, x0[:k], names[:k], m, p, g, config.robust, outp, kappa=config.kappa,
                                  seed=config.seed, batch_size=config.batch_size, max_iter=config.max_iter,
                                  jnd=jnd[:k], on_image=on_image)
            except Exception as e:  # noqa: BLE001 - reported, the other methods go on
                msg = f"{model} {m}:{p} {g}: {type(e).__name__}: {e}"
                if msg not in errors:
                    errors.append(msg)
                continue
            (rows if g == config.goal else thr_rows).extend(part)
    write_csv(rows, outp / "results.csv")
    write_csv(thr_rows, outp / "thresholds.csv")

    result = BenchResult(config=config, rows=rows, threshold_rows=thr_rows, errors=errors, info=machine_info())
    if config.transfer and len(config.models) > 1:
        vic = {m: prepared[m][0] for m in config.models}
        clean = {m: dict(zip(prepared[m][2], prepared[m][1], strict=True)) for m in config.models}
        result.transfer = transfer_matrix(rows, vic, clean, config.kappa)
        write_transfer_csv(result.transfer, outp / "transfer.csv")

    figure_sets = {m: prepared[m][:3] for m in config.models}
    result.curves, result.figure = confidence_figure(config, figure_sets, outp, errors)
    result.seconds = time.perf_counter() - t_start
    (outp / "tables.md").write_text(report_markdown(result, figure=result.figure.name if result.figure else None))
    return result


