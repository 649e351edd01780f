#!/usr/bin/env python
"""Fetch the face test photos that ship in the ``face_recognition`` 1.3.0 source distribution.

Usage: ``python scripts/fetch_face_test_photos.py [CACHE_DIR]`` (default ``tests/data/face_photos``,
where the photos are committed; the tests read them from there and never run this script).
A maintainer runs it only to re-create or re-check that folder.

The sdist is downloaded from PyPI with pip (``pip download --no-deps --no-binary :all:
face_recognition==1.3.0``) and ``tests/test_images/{obama,obama2,obama3,biden}.jpg`` are
extracted into CACHE_DIR and checked against their SHA-256. Nothing is installed. When all
four photos are already in CACHE_DIR with the right hashes, nothing is downloaded.
Exit status: 0 on success, 1 when pip fails (no network) or a file does not match.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "face_recognition==1.3.0"
PHOTOS = {
    "obama.jpg": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    "obama2.jpg": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    "obama3.jpg": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    "biden.jpg": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _complete(cache: Path) -> bool:
    return all((cache / name).is_file() and _sha256(cache / name) == digest for name, digest in PHOTOS.items())


def fetch(cache: Path) -> dict[str, Path]:
    """Make sure the four photos are in ``cache``; return ``{name: path}``.

    Raises:
        RuntimeError: pip could not download the sdist, or a photo is missing or altered.
    """
    cache.mkdir(parents=True, exist_ok=True)
    if not _complete(cache):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "--timeout", "20", "--retries", "1", "-q",
                   SDIST, "-d", tmp]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            archives = list(Path(tmp).glob("face_recognition-1.3.0.tar.gz"))
            if proc.returncode != 0 or not archives:
                last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise RuntimeError(f"pip download {SDIST} failed: {last[0]}")
            with tarfile.open(archives[0], "r:gz") as tar:
                for name in PHOTOS:
                    member = tar.getmember(f"face_recognition-1.3.0/tests/test_images/{name}")
                    src = tar.extractfile(member)
                    if src is None:
                        raise RuntimeError(f"{name} is not a regular file in the sdist")
                    part = cache / (name + ".part")
                    part.write_bytes(src.read())
                    part.replace(cache / name)
    for name, digest in PHOTOS.items():
        got = _sha256(cache / name)
        if got != digest:
            raise RuntimeError(f"{cache / name}: SHA-256 {got} differs from the expected {digest}")
    return {name: cache / name for name in PHOTOS}


def main(argv: list[str]) -> int:
    default = Path(__file__).resolve().parents[1] / "tests" / "data" / "face_photos"
    cache = Path(argv[1]) if len(argv) > 1 else default
    try:
        paths = fetch(cache)
    except (RuntimeError, OSError, KeyError, tarfile.TarError, subprocess.TimeoutExpired) as exc:
        sys.stderr.write(f"fetch_face_test_photos: {exc}\n")
        return 1
    sys.stdout.write("".join(f"{p}\n" for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
