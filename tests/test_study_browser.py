"""The study page in a real browser: a scripted participant answers every trial (closing the tab half-way and
resuming), then ``jndkit study report`` reads the CSV the page wrote.

Playwright for Python drives Debian's ``chromium`` (``executable_path``; no browser is downloaded). Slow:
``make test-slow``. Screenshots go to ``$JNDKIT_STUDY_SCREENSHOTS`` when set (``docs/img`` for the docs),
else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from jndkit.cli import app
from jndkit.study import Trial, match_folders, plan_trials, read_answers
from jndkit.study.server import start_in_thread

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (make browser)"),
]
sync_api = pytest.importorskip("playwright.sync_api")

PHOTOS = ("astronaut", "coffee", "chelsea")
TIMEOUT_MS = 20_000


def _folders(root: Path) -> tuple[Path, list[Path]]:
    """Three 256x256 photo crops; 'mnd' adds +-1 level to every 3rd value, 'hvs' +-3 levels to a patch."""
    from jndkit.samples import sample_array

    orig, mnd, hvs = root / "originals", root / "mnd", root / "hvs"
    for d in (orig, mnd, hvs):
        d.mkdir()
    rng = np.random.default_rng(0)
    for name in PHOTOS:
        arr = sample_array(name)
        h, w = arr.shape[:2]
        arr = arr[(h - 256) // 2 : (h + 256) // 2, (w - 256) // 2 : (w + 256) // 2].astype(int)
        Image.fromarray(arr.astype(np.uint8)).save(orig / f"{name}.png")
        d1 = rng.choice([-1, 0, 1], size=arr.shape) * (rng.random(arr.shape) < 1 / 3)
        Image.fromarray(np.clip(arr + d1, 0, 255).astype(np.uint8)).save(mnd / f"{name}.png")
        d3 = np.zeros_like(arr)
        d3[64:192, 64:192] = rng.choice([-3, 3], size=(128, 128, 3))
        Image.fromarray(np.clip(arr + d3, 0, 255).astype(np.uint8)).save(hvs / f"{name}.png")
    return orig, [mnd, hvs]


def _flicker_answer(t: Trial) -> tuple[str, str]:
    """The scripted participant: finds hvs and the noise catch, guesses 'left' for mnd, sees no identical change."""
    if t.kind == "noise" or t.method == "hvs":
        return t.altered, "yes"
    return "left", "no"


def _rating(t: Trial) -> int:
    return {"noise": 1, "identical": 5}.get(t.kind) or {"mnd": 5, "hvs": 4}[t.method]


def test_scripted_participant_answers_every_trial_and_the_report_reads_them(tmp_path):
    shots = Path(os.environ.get("JNDKIT_STUDY_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    orig, prots = _folders(tmp_path)
    study = replace(match_folders(orig, prots), catch=1)
    plan = plan_trials(study, "p01")
    results = tmp_path / "results"
    url, stop = start_in_thread(study, results)
    taken: set[str] = set()

    def shot(page, name: str) -> None:
        if name not in taken:
            taken.add(name)
            page.screenshot(path=str(shots / f"study-{name}.png"))

    def answer(page, t: Trial, by_keys: bool) -> None:
        page.wait_for_selector(f'body[data-trial="{t.index}"]', timeout=TIMEOUT_MS)
        if t.block == "flicker":
            if t.kind == "test":
                # the top frames flicker: sample them for a second, both states must occur on both sides
                states = page.evaluate(
                    """async () => { const seen = new Set();
                       for (let i = 0; i < 20; i++) {
                         seen.add(document.querySelector('#flicker-left img + img').classList.contains('off') + ':'
                                  + document.querySelector('#flicker-right img + img').classList.contains('off'));
                         await new Promise(r => setTimeout(r, 50)); }
                       return [...seen]; }"""
                )
                assert set(states) == {"true:true", "false:false"}, states
            side, saw = _flicker_answer(t)
            if by_keys:
                page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight")
                page.keyboard.press("y" if saw == "yes" else "n")
                if t.kind == "test":
                    shot(page, "flicker")
                page.keyboard.press("Enter")
            else:
                page.click(f'button[data-side="{side}"]')
                page.click(f'button[data-saw="{saw}"]')
                page.click("#flicker-next")
        else:
            if t.kind == "test":
                shot(page, "rating")
            r = _rating(t)
            if by_keys:
                page.keyboard.press(str(r))
            else:
                page.click(f'button[data-rating="{r}"]')

    half = len(plan) // 2
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            ctx = browser.new_context(viewport={"width": 1280, "height": 760})
            page = ctx.new_page()
            page.goto(url)
            page.fill("#participant", "p01")
            shot(page, "start")
            page.click("#start")
            for t in plan[:half]:
                if t.index == 0 or plan[t.index - 1].block != t.block:
                    page.wait_for_selector("#screen-block:not([hidden])", timeout=TIMEOUT_MS)
                    if t.index == 0:
                        shot(page, "part")
                    page.click("#block-go")
                answer(page, t, by_keys=t.index % 2 == 0)
            # the last answer is saved before the page moves on; close the tab mid-study
            saved = f" {half} of {len(plan)} answered"
            done_js = f"document.getElementById('progress-text').textContent.endsWith('{saved}')"
            page.wait_for_function(done_js, timeout=TIMEOUT_MS)
            page.close()
            assert len(read_answers([results / "p01.csv"])) == half

            # come back with the same id (in the URL): the page resumes at the first unanswered trial
            page = ctx.new_page()
            page.goto(url + "?participant=p01")
            assert page.input_value("#participant") == "p01"
            page.click("#start")
            page.wait_for_function(done_js, timeout=TIMEOUT_MS)  # the plan counts the answers saved before
            for t in plan[half:]:
                if plan[t.index - 1].block != t.block or t.index == half:
                    page.wait_for_selector("#screen-block:not([hidden])", timeout=TIMEOUT_MS)
                    page.click("#block-go")
                answer(page, t, by_keys=t.index % 2 == 1)
            page.wait_for_selector("body[data-done='1']", timeout=TIMEOUT_MS)
            assert f"All {len(plan)} answers are saved" in page.text_content("#done-text")
            shot(page, "done")
            browser.close()
    finally:
        stop()

    answers = read_answers([results / "p01.csv"])
    assert [a.trial for a in answers] == list(range(len(plan)))
    assert [a.trial_id for a in answers] == [t.trial_id for t in plan]
    r = CliRunner().invoke(app, ["study", "report", "--json", str(results / "p01.csv")])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    by = {m["method"]: m for m in data["methods"]}
    assert by["mnd"]["mos"]["mean"] == 5.0 and by["hvs"]["mos"]["mean"] == 4.0
    assert by["hvs"]["detection"]["correct"] == 3 and by["hvs"]["detection"]["n"] == 3
    mnd_left = sum(t.altered == "left" for t in plan if t.block == "flicker" and t.method == "mnd")
    assert by["mnd"]["detection"]["correct"] == mnd_left
    assert data["catch_failures"] == [] and data["catch_mos"]["noise"]["mean"] == 1.0
    text = CliRunner().invoke(app, ["study", "report", str(results / "p01.csv")]).stdout
    assert "no catch trial failed" in text
