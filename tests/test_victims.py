import pytest
import torch

from jndkit.errors import InputError, WeightsNotFoundError
from jndkit.victims import MODELS, load_victim


@pytest.mark.parametrize("fixture", ["mobilenet", "lite0"])
def test_coffee_is_espresso(fixture, request, photo_fn):
    victim = request.getfixturevalue(fixture)
    top = victim.predict(photo_fn("coffee", size=None))[0]
    assert top[0][0] == "espresso" and top[0][1] > 0.8


def test_lite_normalisation_is_not_imagenet():
    info = MODELS["efficientnet_lite0"]
    assert info.mean == pytest.approx((127 / 255,) * 3) and info.std == pytest.approx((128 / 255,) * 3)


def test_any_size_input_and_gradient_reaches_every_pixel(mobilenet, photo_fn):
    x = photo_fn("china", size=None)
    assert x.shape[-2:] == (427, 640)
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(mobilenet(x)[0].max(), x)
    assert g.shape == x.shape and float((g != 0).float().mean()) > 0.99


def test_user_weight_file_for_a_torchvision_architecture(tmp_path, mobilenet, photo_fn):
    path = tmp_path / "mnv2.pth"
    torch.save(mobilenet.model.state_dict(), path)
    v = load_victim("torchvision:mobilenet_v2", weights=path)
    x = photo_fn("chelsea")
    with torch.no_grad():
        assert torch.allclose(v(x), mobilenet(x), atol=1e-5)


def test_missing_weights_say_how_to_provide_them(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="never downloads"):
        load_victim("torchvision:resnet18")
    with pytest.raises(WeightsNotFoundError, match="not found"):
        load_victim("mobilenet_v2", weights=tmp_path / "missing.pth")
    with pytest.raises(InputError, match="unknown model"):
        load_victim("alexnet9000")


def test_class_lookup(mobilenet):
    assert mobilenet.class_index("espresso") == 967
    with pytest.raises(InputError, match="did you mean"):
        mobilenet.class_index("espress")


def test_victim_is_in_eval_mode_so_batch_statistics_never_leak(mobilenet, photo_fn):
    assert mobilenet.training is False and mobilenet.model.training is False
    x = photo_fn("chelsea")
    with torch.no_grad():
        single = mobilenet(x)
        batch = mobilenet(torch.cat([x, photo_fn("rocket")]))[:1]
    assert torch.allclose(single, batch, atol=1e-4)
