"""``jndkit serve`` in a real browser: Playwright for Python driving Debian's ``chromium`` package.

No browser is downloaded (never ``playwright install``): the test uses ``/usr/bin/chromium``
(``make browser`` installs it and Playwright) and skips, saying why, when either is missing.
A person's path through the page: drop two photos and a bad file, wait, compare, flicker, zoom,
download one photo and the zip; the downloaded bytes must be the server's verified file and must
still fool the model when judged again from those bytes.

Set ``JNDKIT_SCREENSHOTS=docs/img`` to write the page's screenshots (``serve-*.png``) there.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from jndkit.samples import sample_array

CHROMIUM = os.environ.get("JNDKIT_CHROMIUM", "/usr/bin/chromium")
FAST = {"photo": {"model": "mobilenet_v2", "upload": "none", "max_iter": 60}}
BAD = b"this is not an image\n"

pytestmark = pytest.mark.slow


def _browser_or_skip() -> Any:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"no chromium at {CHROMIUM} (make browser: apt-get install chromium, pip install playwright)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (make browser: pip install playwright)")
    return sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """The app (fast settings) served by uvicorn on a free loopback port, in a thread."""
    pytest.importorskip("uvicorn")
    import uvicorn

    from jndkit.cli.serve import bind
    from jndkit.serve import ServeSettings, create_app

    _browser_or_skip()
    tmp = tmp_path_factory.mktemp("served")
    app = create_app(ServeSettings(overrides=FAST, tmp_parent=str(tmp), allowed_hosts=["127.0.0.1"]))
    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    srv.should_exit = True
    thread.join(timeout=20)
    sock.close()
    assert not app.state.session.root.exists()  # the uploads are deleted when the server stops


def _shot(page: Any, name: str, tmp: Path, **kw: Any) -> None:
    docs = os.environ.get("JNDKIT_SCREENSHOTS")
    folder = Path(docs or tmp)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"serve-{name}.png"
    page.screenshot(path=str(path), **kw)
    if docs:  # 256 colours keep the docs' screenshots small (a third of the size) and still readable
        with Image.open(path) as im:
            small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        small.save(path, optimize=True)


def _card(page: Any, name: str) -> Any:
    return page.locator(".card", has=page.locator(".name", has_text=name))


def test_page_protects_and_downloads(server: tuple[str, Any], tmp_path: Path, mobilenet: Any) -> None:
    from jndkit.errors import ImageError
    from jndkit.images import load_image
    from jndkit.verify import verify_files

    url, app = server
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee"):
        Image.fromarray(sample_array(name)).resize((400, 300), Image.Resampling.LANCZOS).save(
            photos / f"{name}.jpg", quality=92)
    (photos / "notes.jpg").write_bytes(BAD)
    with pytest.raises(ImageError) as bad_reason:
        load_image(photos / "notes.jpg")
    shots = tmp_path / "shots"
    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        assert page.title() == "jndkit — protect photos"
        expect(page.locator("#limit")).to_contain_text("Up to 50.0 MB per photo")  # waits for /api/config
        _shot(page, "start", shots)

        # faces: the strength does not apply and is greyed out; back to photos
        page.check("input[value=faces]")
        assert page.locator("#strength").is_disabled()
        page.check("input[value=photo]")
        page.select_option("#strength", "strong")

        page.set_input_files("#files", [str(photos / n) for n in ("chelsea.jpg", "coffee.jpg", "notes.jpg")])
        try:
            page.wait_for_selector(".card[data-status=running]", timeout=20_000)
            _shot(page, "progress", shots)
        except Exception:  # noqa: BLE001 -- the photos may all be done before a running state is seen
            pass
        page.wait_for_function(
            "() => { const c = [...document.querySelectorAll('.card')];"
            " return c.length === 3 && c.every(e => ['protected','failed','error','no-face','rejected']"
            ".includes(e.dataset.status)); }", timeout=300_000)
        assert _card(page, "chelsea.jpg").get_attribute("data-status") == "protected"
        assert _card(page, "coffee.jpg").get_attribute("data-status") == "protected"
        bad = _card(page, "notes.jpg")
        assert bad.get_attribute("data-status") == "error"
        assert bad.locator(".message").inner_text() == f"notes.jpg: {bad_reason.value.reason}"
        assert bad.locator(".download").is_hidden()
        assert page.locator("#counts").inner_text().startswith("2 of 3 photos protected")
        assert page.locator("#zip").is_visible()
        card = _card(page, "chelsea.jpg")
        assert "PSNR" in card.locator(".numbers").inner_text()
        assert card.locator("table.mx td.hid").count() == 1  # mobilenet_v2 x saved: class out of the top-5
        page.wait_for_function("() => [...document.querySelectorAll('.card img.prot')]"
                               ".filter(i => i.src).every(i => i.complete && i.naturalWidth === 400)")
        _shot(page, "done", shots, full_page=True)

        # zoom and flicker
        card.locator(".zoom").fill("4")
        widths = card.locator("img").evaluate_all("imgs => imgs.map(i => i.style.width)")
        assert widths == ["400%", "400%", "400%"]
        card.locator(".view").first.evaluate("v => { v.scrollLeft = 300; v.scrollTop = 200; }")
        page.wait_for_timeout(200)
        scrolls = card.locator(".view").evaluate_all("vs => vs.map(v => [v.scrollLeft, v.scrollTop])")
        assert scrolls[1] == scrolls[0] and scrolls[0][0] > 0  # the views scroll together
        card.locator(".flicker").click()
        seen = set()
        for _ in range(8):
            seen.add(card.locator(".prot").get_attribute("src"))
            page.wait_for_timeout(260)
        job_id = card.get_attribute("data-id")
        assert seen == {f"/api/jobs/{job_id}/original.png", f"/api/jobs/{job_id}/protected.png"}
        card.scroll_into_view_if_needed()
        _shot(page, "zoom-flicker", shots, clip=card.bounding_box())
        card.locator(".flicker").click()
        assert card.locator(".prot").get_attribute("src") == f"/api/jobs/{job_id}/protected.png"

        # one photo: the server's verified bytes, under the CLI's name, still protected
        with page.expect_download() as info:
            card.locator(".download").click()
        dl = info.value
        assert dl.suggested_filename == "chelsea.png"
        got = tmp_path / "chelsea.png"
        dl.save_as(got)
        assert got.read_bytes() == app.state.session.get(job_id).file("protected").read_bytes()
        m = verify_files(photos / "chelsea.jpg", got, {"mobilenet_v2": mobilenet}, "none")
        assert m.holds("mobilenet_v2", "hidden")

        # every protected photo as a zip
        with page.expect_download() as info:
            page.click("#zip")
        data = Path(info.value.path()).read_bytes()
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert sorted(zf.namelist()) == ["chelsea.png", "coffee.png"]
            assert zf.read("chelsea.png") == got.read_bytes()

        # a folder: only its images outside hidden folders are sent, each under its folder-relative name
        album = tmp_path / "album"
        (album / "day1").mkdir(parents=True)
        (album / ".cache").mkdir()
        (album / "day1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        (album / ".cache" / "thumb.jpg").write_bytes(BAD)
        (album / "readme.txt").write_text("not a photo")
        page.set_input_files("#folder", str(album))
        folder_card = _card(page, "album/day1/broken.png")
        expect(folder_card).to_have_attribute("data-status", "error", timeout=60_000)
        with pytest.raises(ImageError) as broken:
            load_image(album / "day1" / "broken.png")
        expect(folder_card.locator(".message")).to_have_text(f"album/day1/broken.png: {broken.value.reason}")
        assert page.locator(".card").count() == 4  # readme.txt and .cache/thumb.jpg were not sent
        assert errors == []
        browser.close()
