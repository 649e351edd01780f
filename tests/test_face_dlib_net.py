"""dlib face network: parser, PyTorch port, and the reference descriptor of SPECS §3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from jndkit.errors import InputError, WeightsNotFoundError
from jndkit.face.dlib_net import (
    DlibFaceNet,
    DlibFormatError,
    _add_zero_padded,
    find_dlib_face_model,
    load_dlib_face_net,
    read_dlib_net,
)

try:
    MODEL = find_dlib_face_model()
except WeightsNotFoundError:  # pragma: no cover - depends on the environment
    pytest.skip(
        "face_recognition_models is not installed (pip install --no-deps face-recognition-models==0.3.0)",
        allow_module_level=True,
    )

# SPECS §3: dlib-bin 20.0.1 compute_face_descriptor on the synthetic chip.
REF_HEAD = [-0.051708, 0.121733, 0.05896, 0.010866, -0.047161, -0.041364]
REF_NORM = 1.30614


def synthetic_chip() -> np.ndarray:
    """150x150x3 uint8: R = floor(1.7 col) mod 256, G = floor(1.3 row + 40) mod 256,
    B = floor(0.8 (row + col) + 90) mod 256 (float64 products, floored, then mod)."""
    row, col = np.mgrid[0:150, 0:150].astype(np.float64)
    r = np.floor(1.7 * col) % 256
    g = np.floor(1.3 * row + 40) % 256
    b = np.floor(0.8 * (row + col) + 90) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def net() -> DlibFaceNet:
    return load_dlib_face_net()


def test_parser_reads_all_layers_with_shapes() -> None:
    loss, layers = read_dlib_net(MODEL)
    assert loss["kind"] == "loss_metric_2"
    assert loss["dist_thresh"] == pytest.approx(0.6)
    kinds = [layer.kind for layer in layers]
    assert kinds[0] == "input_rgb_image_sized"
    assert layers[0].meta["nr"] == layers[0].meta["nc"] == 150
    np.testing.assert_allclose(layers[0].meta["means"], [122.782, 117.001, 104.298], atol=1e-3)
    convs = [layer for layer in layers if layer.kind.startswith("con_")]
    affines = [layer for layer in layers if layer.kind.startswith("affine")]
    fcs = [layer for layer in layers if layer.kind.startswith("fc_")]
    assert (len(convs), len(affines), len(fcs)) == (29, 29, 1)
    assert kinds.count("add_prev_") == 14
    assert kinds.count("max_pool_2") == 1 and kinds.count("avg_pool_2") == 5
    # first conv: 32 filters 7x7 stride 2 over 3 channels, with bias
    first = convs[0]
    assert first.meta["filters_shape"] == (32, 3, 7, 7)
    assert (first.meta["stride_y"], first.meta["pad_y"]) == (2, 0)
    assert first.params is not None and first.params.size == 32 * 3 * 49 + 32
    # last conv: 256 -> 256, 3x3
    assert convs[-1].meta["filters_shape"] == (256, 256, 3, 3)
    assert sum(c.meta["stride_y"] == 2 for c in convs) == 5  # stem + 4 downsampling blocks
    assert affines[-1].params is not None and affines[-1].params.size == 2 * 256
    assert fcs[0].meta["num_outputs"] == 128 and fcs[0].meta["num_inputs"] == 256
    assert fcs[0].params is not None and fcs[0].params.size == 256 * 128
    # global average pool is avg_pool with nr = nc = 0, stride 1
    assert layers[-2].kind == "avg_pool_2" and layers[-2].meta["nr"] == 0 and layers[-2].meta["stride_y"] == 1


def test_network_shapes_and_parameter_count(net: DlibFaceNet) -> None:
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 29
    assert net.fc.weight.shape == (128, 256)
    n_file = sum(layer.params.size for layer in read_dlib_net(MODEL)[1] if layer.params is not None)
    assert sum(p.numel() for p in net.parameters()) == n_file == 5_614_592
    assert not net.training


def test_synthetic_chip_matches_dlib_reference(net: DlibFaceNet) -> None:
    chip = torch.from_numpy(synthetic_chip()).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        d = net(chip)[0].double()
    np.testing.assert_allclose(d[:6].numpy(), REF_HEAD, atol=1e-4)
    assert float(d.norm()) == pytest.approx(REF_NORM, abs=1e-4)


def test_synthetic_chip_matches_installed_dlib(net: DlibFaceNet) -> None:
    dlib = pytest.importorskip("dlib")
    rec = dlib.face_recognition_model_v1(str(MODEL))
    img = synthetic_chip()
    ref = np.array(rec.compute_face_descriptor(img))
    chip = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        d = net(chip)[0].double().numpy()
    assert np.abs(d - ref).max() < 1e-5


def test_batch_and_gradient(net: DlibFaceNet) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 150, 150, generator=g, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 128)
    with torch.no_grad():
        single = net(x[1:2])
    torch.testing.assert_close(out[1:2], single, atol=1e-5, rtol=1e-5)
    out[0].sum().backward()
    assert x.grad is not None
    assert x.grad[0].abs().sum() > 0 and x.grad[1].abs().sum() == 0


def test_wrong_chip_shape_raises(net: DlibFaceNet) -> None:
    with pytest.raises(InputError, match=r"\[B,3,150,150\]"):
        net(torch.zeros(1, 3, 160, 160))


def test_add_pads_smaller_operand_bottom_right_and_channels() -> None:
    a = torch.ones(1, 2, 4, 4)
    b = torch.full((1, 3, 3, 3), 2.0)
    out = _add_zero_padded(a, b)
    assert out.shape == (1, 3, 4, 4)
    assert out[0, 0, 0, 0] == 3.0 and out[0, 0, 3, 3] == 1.0  # b missing at bottom-right
    assert out[0, 2, 0, 0] == 2.0 and out[0, 2, 3, 0] == 0.0  # a missing channel 2


def test_missing_file_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps face-recognition-models==0.3.0"):
        load_dlib_face_net(tmp_path / "nope.dat")


def test_truncated_or_foreign_file_raises(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(MODEL.read_bytes()[:100_000])
    with pytest.raises(DlibFormatError, match="unexpected end of file"):
        read_dlib_net(truncated)
    foreign = tmp_path / "foreign.dat"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(InputError, match="not a dlib network file"):
        load_dlib_face_net(foreign)
