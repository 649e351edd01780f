"""``jndkit serve``: the API through FastAPI's TestClient, names, limits, the session folder, the CLI.

The app protects with the real library (``Protector``), made fast by the settings' test hook: one
model (mobilenet_v2), no upload suite, small photos and ``strength=strong``.
"""

from __future__ import annotations

import io
import re
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from jndkit.cli import app as cli_app
from jndkit.cli.serve import bind, is_loopback
from jndkit.errors import ImageError
from jndkit.images import load_image
from jndkit.samples import sample_array
from jndkit.serve import ServeSettings, create_app, download_name, sanitise_name

FAST = {"photo": {"model": "mobilenet_v2", "upload": "none", "max_iter": 60}}
BAD = b"this is not an image\n"


def jpeg(name: str, size: tuple[int, int] = (160, 120)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(sample_array(name)).resize(size, Image.Resampling.LANCZOS).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def post(client: TestClient, name: str, data: bytes, task: str = "photo", strength: str = "strong"):  # type: ignore[no-untyped-def]
    return client.post("/api/photos", data={"name": name, "task": task, "strength": strength},
                       files={"file": ("upload", data)})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One app with two photos (one inside a folder) and a bad file, all done."""
    tmp = tmp_path_factory.mktemp("serve")
    app = create_app(ServeSettings(overrides=FAST, tmp_parent=str(tmp)))
    photos = {"trip/chelsea.jpg": jpeg("chelsea"), "coffee.jpg": jpeg("coffee"), "notes.jpg": BAD}
    with TestClient(app) as client:
        ids = {}
        for name, data in photos.items():
            r = post(client, name, data)
            assert r.status_code == 202, r.text
            ids[name] = r.json()["id"]
        assert app.state.session.wait(300)
        jobs = {j["name"]: j for j in client.get("/api/jobs").json()["jobs"]}
        yield app, client, ids, jobs, photos
    assert not app.state.session.root.exists()  # deleted when the app stops


@pytest.mark.parametrize(("raw", "clean"), [
    ("a.jpg", "a.jpg"),
    ("trip/day 1/a.jpg", "trip/day 1/a.jpg"),
    ("../../etc/passwd", "etc/passwd"),
    ("/abs/path.png", "abs/path.png"),
    ("C:\\Users\\me\\.hidden.jpg", "C_/Users/me/_hidden.jpg"),
    ("a\x00b<>.jpg", "a_b__.jpg"),
    ("", "photo"),
    ("..", "photo"),
])
def test_sanitise_name(raw: str, clean: str) -> None:
    assert sanitise_name(raw) == clean


@pytest.mark.parametrize(("name", "out"), [
    ("a.jpg", "a.png"), ("trip/a.JPG", "trip/a.png"), ("a.tar.webp", "a.tar.png"), ("README", "README.png"),
    ("a.png", "a.png"),
])
def test_download_name_is_the_cli_name(name: str, out: str) -> None:
    from jndkit.images import output_path

    assert download_name(name) == out
    # the CLI's rule (jndkit.images.output_path, format png) gives the same file name
    assert output_path(Path(name), Path("o"), "png").name == Path(out).name


def test_jobs_finish_with_the_cli_outcomes(served) -> None:  # type: ignore[no-untyped-def]
    _, _, _, jobs, _ = served
    assert {n: j["status"] for n, j in jobs.items()} == {
        "trip/chelsea.jpg": "protected", "coffee.jpg": "protected", "notes.jpg": "error"}
    for name in ("trip/chelsea.jpg", "coffee.jpg"):
        j = jobs[name]
        assert j["error"] is None
        assert set(j["links"]) == {"original", "protected", "difference", "download"}
        rec = j["record"]
        assert rec["status"] == "protected" and rec["success"] is True
        assert rec["width"] == 160 and rec["height"] == 120
        assert rec["strength"] == pytest.approx(1.0)  # strong = 1x the JND map
        assert "input" not in rec and "output" not in rec  # no server path reaches the page
        assert rec["matrix"]["models"] == ["mobilenet_v2"]
    assert jobs["notes.jpg"]["links"] == {}


def test_bad_file_gets_the_cli_reason(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, _, jobs, _ = served
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(BAD)
    with pytest.raises(ImageError) as e:
        load_image(bad)
    assert jobs["notes.jpg"]["error"] == f"notes.jpg: {e.value.reason}"
    assert "not an image" in jobs["notes.jpg"]["error"]


def test_download_is_the_verified_file_and_stays_protected(served, mobilenet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from jndkit.verify import verify_files

    app, client, ids, jobs, photos = served
    jid = ids["trip/chelsea.jpg"]
    r = client.get(f"/api/jobs/{jid}/download")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert 'filename="chelsea.png"' in r.headers["content-disposition"]
    job = app.state.session.get(jid)
    assert r.content == job.file("protected").read_bytes()
    # re-judged from the downloaded bytes: mobilenet_v2 no longer sees the photo's class
    (tmp_path / "chelsea.jpg").write_bytes(photos["trip/chelsea.jpg"])
    (tmp_path / "chelsea.png").write_bytes(r.content)
    m = verify_files(tmp_path / "chelsea.jpg", tmp_path / "chelsea.png", {"mobilenet_v2": mobilenet}, "none")
    assert m.holds("mobilenet_v2", "hidden")
    assert m.cell("mobilenet_v2", "saved").label == jobs["trip/chelsea.jpg"]["record"]["matrix"]["cells"][0]["label"]
    orig, prot = load_image(tmp_path / "chelsea.jpg").rgb, load_image(tmp_path / "chelsea.png").rgb
    assert prot.shape == orig.shape and not np.array_equal(prot.numpy(), orig.numpy())


def test_previews_are_the_decoded_original_and_the_amplified_difference(served) -> None:  # type: ignore[no-untyped-def]
    from jndkit.images import decode_bytes

    _, client, ids, _, photos = served
    jid = ids["coffee.jpg"]
    orig = decode_bytes(client.get(f"/api/jobs/{jid}/original.png").content)
    assert np.array_equal(orig.numpy(), decode_bytes(photos["coffee.jpg"]).numpy())
    prot = decode_bytes(client.get(f"/api/jobs/{jid}/protected.png").content)
    diff = decode_bytes(client.get(f"/api/jobs/{jid}/difference.png").content)
    expect = (0.5 + 40.0 * (prot - orig)).clamp(0, 1)
    assert float((diff - expect).abs().max()) <= 0.5 / 255 + 1e-6


def test_zip_holds_every_protected_photo_under_its_cli_name(served) -> None:  # type: ignore[no-untyped-def]
    app, client, ids, _, _ = served
    r = client.get("/api/download.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert sorted(zf.namelist()) == ["coffee.png", "trip/chelsea.png"]
        for name, jid in (("coffee.png", ids["coffee.jpg"]), ("trip/chelsea.png", ids["trip/chelsea.jpg"])):
            assert zf.read(name) == app.state.session.get(jid).file("protected").read_bytes()
    r = client.get("/api/download.zip", params={"ids": ids["coffee.jpg"]})
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.namelist() == ["coffee.png"]
    assert not list(app.state.session.root.glob("*.zip"))  # the zip is removed once sent
    assert client.get("/api/download.zip", params={"ids": ids["notes.jpg"]}).status_code == 404


def test_nothing_to_download_for_a_bad_file_or_an_unknown_id(served) -> None:  # type: ignore[no-untyped-def]
    _, client, ids, _, _ = served
    r = client.get(f"/api/jobs/{ids['notes.jpg']}/download")
    assert r.status_code == 409 and "notes.jpg: not protected (error)" in r.json()["detail"]
    assert client.get(f"/api/jobs/{ids['notes.jpg']}/protected.png").status_code == 404
    assert client.get("/api/jobs/0123456789abcdef").status_code == 404
    for evil in ("..%2F..%2Fetc%2Fpasswd", "..", "photo", ids["coffee.jpg"] + "x"):
        assert client.get(f"/api/jobs/{evil}/original.png").status_code == 404
    assert client.get(f"/api/jobs/{ids['coffee.jpg']}/photo.png").status_code == 404  # the upload itself


def test_uploads_are_stored_under_generated_names_only(served) -> None:  # type: ignore[no-untyped-def]
    app, client, _, _, _ = served
    r = post(client, "../../evil.jpg", BAD)
    assert r.status_code == 202
    job = r.json()
    assert job["name"] == "evil.jpg" and re.fullmatch(r"[0-9a-f]{16}", job["id"])
    app.state.session.wait(60)
    root = app.state.session.root
    names = {p.name for p in root.rglob("*")}
    assert not any("evil" in n or "chelsea" in n or "coffee" in n for n in names)
    assert not (root.parent / "evil.jpg").exists()
    assert {p.name for p in (root / job["id"]).iterdir()} == {"photo", "out"}


def test_upload_over_the_limit_gets_413(tmp_path: Path) -> None:
    app = create_app(ServeSettings(max_upload_mb=0.1, overrides=FAST, tmp_parent=str(tmp_path)))
    with TestClient(app) as client:
        # declared size far over the limit: refused from the header, before the body is read
        r = client.post("/api/photos?name=big.jpg", data={"name": "big.jpg"}, files={"file": ("u", b"0" * 300_000)})
        assert r.status_code == 413
        assert r.json()["detail"] == ("big.jpg: 300 kB is over this server's upload limit of 100 kB "
                                      "(jndkit serve --max-upload-mb)")
        # just over the limit: refused when the file is read
        r = post(client, "edge.jpg", b"0" * 100_001)
        assert r.status_code == 413
        assert r.json()["detail"].startswith("edge.jpg: over this server's upload limit of 100 kB")
        assert app.state.session.list() == []
        assert post(client, "ok.jpg", BAD).status_code == 202  # at the limit or below: accepted


def test_bad_task_or_strength_is_400(tmp_path: Path) -> None:
    app = create_app(ServeSettings(overrides=FAST, tmp_parent=str(tmp_path)))
    with TestClient(app) as client:
        r = post(client, "a.jpg", BAD, task="video")
        assert r.status_code == 400 and "task must be photo or faces, got 'video'" in r.json()["detail"]
        r = post(client, "a.jpg", BAD, strength="huge")
        assert r.status_code == 400 and "strength must be one of auto, invisible, subtle, strong" in r.json()["detail"]
        r = client.post("/api/photos", data={"name": "a.jpg"})
        assert r.status_code == 400 and "no file" in r.json()["detail"]
        assert post(client, "empty.jpg", b"").status_code == 400
        assert app.state.session.list() == []


def test_strength_reaches_the_protector(tmp_path: Path) -> None:
    """Each (task, strength) gets its own Protector, built once, with the strength asked."""
    app = create_app(ServeSettings(overrides=FAST, tmp_parent=str(tmp_path)))
    photo = jpeg("coffee")
    with TestClient(app) as client:
        for strength in ("strong", "strong", "subtle"):
            assert post(client, "c.jpg", photo, strength=strength).status_code == 202
        assert app.state.session.wait(300)
        engines = app.state.session._engines
        assert sorted(engines) == [("photo", "strong"), ("photo", "subtle")]
        assert engines[("photo", "strong")].config.strength == "strong"
        assert engines[("photo", "subtle")].config.model == "mobilenet_v2"
        recs = [j["record"] for j in client.get("/api/jobs").json()["jobs"]]
        assert [r["strength"] for r in recs] == pytest.approx([1.0, 1.0, 0.75])
        assert [j.status for j in app.state.session.list()] == ["protected"] * 3


def test_faces_task_reports_a_photo_without_a_face(tmp_path: Path) -> None:
    """The faces task runs the CLI's face panel (MTCNN, dlib + FaceNet): a flat grey picture has no face,
    so nothing is written and nothing can be downloaded; the original is still shown."""
    app = create_app(ServeSettings(tmp_parent=str(tmp_path)))
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 130, 140)).save(buf, "PNG")
    with TestClient(app) as client:
        r = post(client, "grey.png", buf.getvalue(), task="faces", strength="auto")
        assert r.status_code == 202
        assert app.state.session.wait(300)
        job = client.get(f"/api/jobs/{r.json()['id']}").json()
        assert job["status"] == "no-face"
        assert job["error"].startswith("no face") and "nothing written" in job["error"]
        assert set(job["links"]) == {"original"}
        assert client.get(f"/api/jobs/{job['id']}/download").status_code == 409
        assert list(app.state.session._engines) == [("faces", "auto")]
        # the same line as the library gives the command line for that file
        src = tmp_path / "grey.png"
        src.write_bytes(buf.getvalue())
        (tmp_path / "out").mkdir()
        from jndkit.pipeline import protect_one

        rec = protect_one(app.state.session._engines[("faces", "auto")], src, tmp_path / "out" / "grey.png")
        assert rec.status == "no-face" and job["error"] == rec.error.replace(str(src), "grey.png")


def test_page_and_headers(tmp_path: Path) -> None:
    app = create_app(ServeSettings(overrides=FAST, tmp_parent=str(tmp_path)))
    with TestClient(app) as client:
        r = client.get("/")
        assert r.status_code == 200 and "webkitdirectory" in r.text and 'value="faces"' in r.text
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/static/app.css").status_code == 200
        cfg = client.get("/api/config").json()
        assert cfg["max_upload_bytes"] == 50_000_000 and cfg["strengths"] == ["auto", "invisible", "subtle", "strong"]
        assert ".jpg" in cfg["image_suffixes"]
        assert client.get("/docs").status_code == 404


def test_only_loopback_host_names_when_asked(tmp_path: Path) -> None:
    app = create_app(ServeSettings(allowed_hosts=["127.0.0.1", "localhost"], tmp_parent=str(tmp_path)))
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        assert client.get("/api/config").status_code == 200
    with TestClient(create_app(ServeSettings(allowed_hosts=["127.0.0.1"], tmp_parent=str(tmp_path))),
                    base_url="http://attacker.example") as client:
        assert client.get("/api/config").status_code == 400


def test_session_folder_is_deleted_on_stop(tmp_path: Path) -> None:
    app = create_app(ServeSettings(overrides=FAST, tmp_parent=str(tmp_path)))
    root = app.state.session.root
    with TestClient(app) as client:
        post(client, "a.jpg", BAD)
        app.state.session.wait(60)
        assert root.is_dir() and any(root.iterdir())
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("host", "local"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                             ("127.0.0.2", True), ("0.0.0.0", False), ("192.168.1.4", False)])
def test_is_loopback(host: str, local: bool) -> None:
    assert is_loopback(host) is local


def test_cli_serve_help_and_taken_port() -> None:
    runner = CliRunner()
    r = runner.invoke(cli_app, ["serve", "--help"])
    assert r.exit_code == 0
    for opt in ("--host", "--port", "--max-upload-mb", "--workers"):
        assert opt in r.output
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        r = runner.invoke(cli_app, ["serve", "--port", str(port)])
        assert r.exit_code == 2
        assert f"cannot listen on 127.0.0.1:{port}" in r.output
    finally:
        taken.close()
    r = runner.invoke(cli_app, ["serve", "--max-upload-mb", "0"])
    assert r.exit_code == 2 and "--max-upload-mb must be > 0" in r.output


def test_bind_gives_a_listening_socket() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        sock.close()


def test_stopping_ends_the_photo_in_hand_at_its_next_iteration(tmp_path: Path) -> None:
    """close() makes the engine's progress callback raise, joins the worker and deletes the folder;
    a slow attack (here an engine that would iterate for a minute) does not hold the server up."""
    import time

    from jndkit.serve.jobs import Cancelled, Session

    seen: list[BaseException] = []

    from jndkit.pipeline import Record

    class SlowEngine:  # a task of the pipeline whose attack would take a minute
        name, fmt, quality = "photo", "png", 95

        def new_record(self, src):  # type: ignore[no-untyped-def]
            return Record(input=str(src))

        def protect(self, image, dst, record, progress):  # type: ignore[no-untyped-def]
            try:
                for i in range(6000):
                    progress(i, 6000, {})
                    time.sleep(0.01)
            except BaseException as e:
                seen.append(e)
                raise
            raise AssertionError("not cancelled")

    session = Session(tmp_parent=str(tmp_path))
    session._engines[("photo", "strong")] = SlowEngine()
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 90, 90)).save(buf, "PNG")
    job = session.add("slow.png", buf.getvalue(), "photo", "strong")
    for _ in range(500):
        if job.step > 3:
            break
        time.sleep(0.01)
    assert job.status == "running" and job.step > 3
    t0 = time.monotonic()
    session.close()
    assert time.monotonic() - t0 < 5
    assert len(seen) == 1 and isinstance(seen[0], Cancelled)
    assert job.status == "error" and job.error == "slow.png: the server stopped"
    assert not session.root.exists()
