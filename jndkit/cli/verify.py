"""``jndkit verify``: :func:`~jndkit.verify.verify_files` -> the protection matrix (model x upload) as a table or
``--json``; exit 0 when the protection holds for every model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..errors import JndkitError
from .common import err, fail, out


def verify(
    original: Path = typer.Argument(..., help="The original photo."),
    protected: Path = typer.Argument(..., help="Its protected copy (jndkit's or any other tool's)."),
    model: str = typer.Option("imagenet", "--model", help="Judges: a panel (imagenet) or a comma list of models."),
    upload: str = typer.Option("social", "--upload", help="Upload suite: social | none | jpeg90 | a comma list."),
    as_json: bool = typer.Option(False, "--json", help="Print the matrix as JSON on stdout."),
    task: str = typer.Option("classify", "--task", help="classify (default) | face (every face, per recogniser: "
                                                        "--model dlib,facenet_casia) | detect (SSD-MobileNetV2: "
                                                        "--goal)."),
    goal: str = typer.Option("vanish", "--goal", help="detect: vanish | vanish:CLASS | vanish-all | mislabel:CLASS."),
) -> None:
    """Judge PROTECTED against ORIGINAL: every model after every upload transform (top-1, top-5, confidence)."""
    from ..verify import load_judges, verify_files

    if task == "detect":
        _verify_detect(original, protected, goal, upload, as_json)
    if task == "face":
        _verify_face(original, protected, None if model == "imagenet" else model, upload, as_json)
    if task != "classify":
        fail(f"--task must be classify, face or detect, got {task!r}")

    try:
        m = verify_files(original, protected, load_judges(model), upload)
    except JndkitError as e:
        fail(str(e), 1)
    if as_json:
        from ..jsonio import dumps

        out.print_json(dumps(m.to_json()))
    else:
        table = Table(title=f"{protected.name}: {m.summary()} ({m.suite})")
        table.add_column("upload")
        for name in m.models:
            table.add_column(f"{name}\n[dim]clean: {m.cell(name, m.transforms[0]).clean_label}[/dim]")
        for t in m.transforms:
            row = [t]
            for name in m.models:
                c = m.cell(name, t)
                colour = "green" if c.hidden else ("yellow" if c.changed else "red")
                row.append(f"[{colour}]{c.label} {c.confidence:.2f}[/{colour}]"
                           f"[dim] (clean {c.clean_prob:.2f}{', top-5' if c.in_top5 else ''})[/dim]")
            table.add_row(*row)
        out.print(table)
        err.print("green: top-1 changed and the clean class out of the top-5; yellow: top-1 changed only; "
                  "red: still recognised", highlight=False)
    raise typer.Exit(0 if all(m.holds(n) for n in m.models) else 1)


def _verify_detect(original: Path, protected: Path, goal: str, upload: str, as_json: bool) -> None:
    """``verify --task detect``: the detector, from scratch, on the file and after every upload transform."""
    from ..detect.protect import DetectConfig, DetectProtector
    from ..images import load_image

    try:
        p = DetectProtector(DetectConfig(goal=goal, upload=upload))
        v = p.judge_tensor(load_image(original).rgb, load_image(protected).rgb)
    except JndkitError as e:
        fail(str(e), 1)
    rows = [{"transform": c.transform, "reached": c.reached, "margin": round(c.margin, 4),
             "boxes": [{"name": d.name, "score": round(d.score, 3)} for d in c.boxes]} for c in v.checks]
    if as_json:
        from ..jsonio import dumps

        out.print_json(dumps({"goal": goal, "success": v.success, "robust_success": v.robust_success,
                              "boxes_before": [{"name": d.name, "score": round(d.score, 3)} for d in v.boxes_before],
                              "checks": rows}))
    else:
        table = Table(title=f"{protected.name}: {goal} " + ("holds" if v.success and v.robust_success is not False
                                                            else "does not hold")
                      + f" (clean: {', '.join(f'{d.name} {d.score:.2f}' for d in v.boxes_before) or 'no box'})")
        for col in ("upload", "goal reached", "boxes the detector finds"):
            table.add_column(col)
        for c in v.checks:
            colour = "green" if c.reached else "red"
            table.add_row(c.transform, f"[{colour}]{'yes' if c.reached else 'no'}[/{colour}]",
                          ", ".join(f"{d.name} {d.score:.2f}" for d in c.boxes) or "none")
        out.print(table)
    raise typer.Exit(0 if v.success and v.robust_success is not False else 1)


def _verify_face(original: Path, protected: Path, recognisers: str | None, upload: str, as_json: bool) -> None:
    """``verify --task face``: every face of ORIGINAL found again in PROTECTED (and after every upload
    transform) by a fresh MTCNN, each recogniser's distance to the clean face against its threshold."""
    from ..face.panel import verify_faces
    from ..images import load_image

    try:
        faces = verify_faces(load_image(protected).rgb, load_image(original).rgb, recognisers, upload)
    except JndkitError as e:
        fail(str(e), 1)
    if not faces:
        fail(f"{original}: no face found; nothing to verify", 1)
    ok = all(f["protected"] for f in faces)
    if as_json:
        from ..jsonio import dumps

        out.print_json(dumps({"protected": ok, "faces": faces}))
    else:
        for i, f in enumerate(faces, 1):
            table = Table(title=f"{protected.name}, face {i} at {f['box']}: "
                                + ("protected" if f["protected"] else "still recognised"))
            names = list(dict.fromkeys(c["recogniser"] for c in f["checks"]))
            table.add_column("upload")
            for n in names:
                table.add_column(n)
            for t in dict.fromkeys(c["transform"] for c in f["checks"]):
                row = [t]
                for n in names:
                    (c,) = [c for c in f["checks"] if c["transform"] == t and c["recogniser"] == n]
                    colour = "green" if c["protected"] else "red"
                    what = "not found" if not c["found"] else f"{c['distance']:.3f} (same if < {c['threshold']:g})"
                    row.append(f"[{colour}]{what}[/{colour}]")
                table.add_row(*row)
            out.print(table)
        err.print("green: not matched to the clean face (distance above the recogniser's threshold, or no face "
                  "found); red: still recognised", highlight=False)
    raise typer.Exit(0 if ok else 1)
