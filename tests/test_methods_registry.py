"""The method registry: typed parameters per method, presets, overrides, errors, and no import cycle.

The reference values below are the presets as they were written before the parameters were typed
(``Mapping[str, float]``); every method's outputs were compared bit for bit across that change.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest
import torch

from jndkit.attacks import METHODS, Params, get_method, method_names, run_attack
from jndkit.attacks.registry import MethodSpec, register
from jndkit.errors import InputError
from jndkit.goals import Untargeted

L = 1.0 / 255.0

# The default preset of every method, as the untyped registry held it (ints and bools as floats).
DEFAULTS: dict[str, dict[str, float]] = {
    "levels": {"fraction": 0.004, "max_levels": 1.0, "ssim_weight": 0.1, "mu": 1.0},
    "jnd": {"lambda1": 100.0, "lambda2": 10.0, "lambda3": 10.0, "lambda4": 1.0, "alpha": 1e-4},
    "jnd-baseline": {"lambda1": 100.0, "lambda2": 10.0, "lambda3": 0.0, "lambda4": 0.0, "alpha": 1e-4},
    "fgsm": {"eps": 2 * L},
    "fgv": {"eps": 2 * L, "alpha": 2 * L, "steps": 1.0},
    "bim": {"eps": 4 * L, "alpha": L, "steps": 10.0},
    "pgd": {"eps": 4 * L, "alpha": L, "steps": 10.0, "random_start": 4 * L},
    "mifgsm": {"eps": 4 * L, "alpha": L, "steps": 10.0, "mu": 1.0},
    "difgsm": {"eps": 4 * L, "alpha": L, "steps": 10.0, "mu": 1.0, "diversity_prob": 0.5, "resize_rate": 0.9},
    "deepfool": {"k": 10.0, "overshoot": 0.02, "steps": 50.0},
    "cw": {"c": 0.1, "confidence": 0.0, "lr": 0.01, "steps": 100.0, "retries": 3.0, "prune": 0.0},
    "ddn": {"init_rms": 0.1, "gamma": 0.05, "alpha": 1.0, "alpha_min": 0.01, "steps": 100.0, "refine": 0.0,
            "prune": 0.0},
    "mnd": {"lr": 1e-3, "r": 1.0, "beta1": 100.0, "beta1_l2": 0.0, "beta2": 100.0, "beta3": 100.0},
    "hvs": {"lr": 0.01, "alpha": 1.0, "m_r": 3.0, "m_g": 5.0, "m_b": 1.0, "beta1": 1500.0, "beta2": 1500.0,
            "beta3": 1500.0, "beta1_orig": 0.0, "beta2_orig": 0.0, "delta": -50.0},
    "cv": {"m": 50.0, "n": 5.0, "s": 1.0, "init_scale": 0.01, "lr": 0.003, "alpha": 1.0},
    "shield": {"strength": 0.5, "alpha": 0.25, "mu": 1.0, "ti_sigma": 1.0, "eot": 1.0, "grey": 1.0, "steps": 12.0,
               "check_every": 3.0},
}
# Parameters that count or switch: declared int / bool; every other parameter is a float.
INTS = {"steps", "max_levels", "k", "retries", "refine", "n", "eot", "check_every"}
BOOLS = {"prune", "grey"}


def _declared(cls: type[Params]) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def test_the_registry_holds_every_method() -> None:
    assert method_names() == sorted(DEFAULTS)
    assert sorted(METHODS) == sorted(DEFAULTS)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default_parameters_are_typed_and_unchanged(name: str) -> None:
    params = get_method(name).params
    spec = METHODS[name]
    assert isinstance(params, Params) and type(params) is spec.params
    assert dict(params) == DEFAULTS[name]  # today's defaults, value for value
    assert list(params) == list(DEFAULTS[name])  # in the same order (records list them)
    want = {k: int if k in INTS else bool if k in BOOLS else float for k in DEFAULTS[name]}
    assert _declared(type(params)) == want
    assert {k: type(v) for k, v in params.items()} == want  # ints stay ints, bools stay bools
    if name != "jnd-baseline":  # the ablation shares jnd's parameters with BR and TV off
        assert type(params)() == params  # the dataclass defaults are the default preset


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_every_preset_validates_into_the_method_parameters(name: str) -> None:
    spec = METHODS[name]
    for preset in spec.presets:
        p = get_method(name, preset).params
        assert type(p) is spec.params, preset
        assert all(type(v) is _declared(type(p))[k] for k, v in p.items()), preset


def test_presets_that_differ_from_the_default() -> None:
    assert dict(get_method("levels", "fast").params) == {"fraction": 0.01, "max_levels": 2, "ssim_weight": 0.0,
                                                          "mu": 1.0}
    assert get_method("cw", "torchattacks").params == {"c": 1.0, "confidence": 0.0, "lr": 0.01, "steps": 50,
                                                        "retries": 0, "prune": False}
    assert get_method("cw", "torchattacks").max_iter == 50 and get_method("cw", "torchattacks").retry.max_tries == 0  # type: ignore[union-attr]
    refined = get_method("ddn", "refined")
    assert (refined.refine, refined.prune, refined.max_iter) == (100, True, 100)
    assert get_method("deepfool", "fast").params["k"] == 4
    assert get_method("jnd", "paper-cifar").params == {"lambda1": 10.0, "lambda2": 1.0, "lambda3": 1.0,
                                                       "lambda4": 10.0, "alpha": 0.05}


def test_overrides_keep_the_declared_type() -> None:
    bim = get_method("bim", steps=20.0, eps=8 / 255)  # an integral float is accepted for an int field
    assert bim.params["steps"] == 20 and type(bim.params["steps"]) is int and bim.max_iter == 20
    assert bim.params["eps"] == 8 / 255
    assert type(get_method("fgsm", eps=1).params["eps"]) is float  # an int is accepted for a float field
    cw = get_method("cw", prune=1.0, retries=2)
    assert cw.params["prune"] is True and cw.prune is True and cw.retry.max_tries == 2  # type: ignore[union-attr]
    shield = get_method("shield", grey=False, check_every=2)
    assert shield.params["grey"] is False and shield.check_every == 2
    assert get_method("levels", max_iter=7).max_iter == 7


@pytest.mark.parametrize(("name", "params", "message"), [
    ("bim", {"steps": 2.5}, "method bim: parameter steps must be int, got 2.5"),
    ("shield", {"eot": float("nan")}, "method shield: parameter eot must be int, got nan"),
    ("cw", {"prune": 0.5}, "method cw: parameter prune must be bool, got 0.5"),
    ("cw", {"prune": "yes"}, "method cw: parameter prune must be bool, got 'yes'"),
    ("mnd", {"lr": True}, "method mnd: parameter lr must be float, got True"),
    ("jnd-baseline", {"alpha": "0.1"}, "method jnd-baseline: parameter alpha must be float, got '0.1'"),
    ("levels", {"max_iter": 1.5}, "method levels: parameter max_iter must be int, got 1.5"),
])
def test_a_value_of_the_wrong_kind_is_an_input_error(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as err:
        get_method(name, **params)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_unknown_names_are_rejected_with_the_same_text_as_before() -> None:
    with pytest.raises(InputError) as err:
        get_method("nope")
    assert str(err.value) == f"unknown method 'nope'; available: {', '.join(sorted(DEFAULTS))}"
    with pytest.raises(InputError) as err:
        get_method("bim", "nope")
    assert str(err.value) == "method bim has no preset 'nope'; presets: default"
    with pytest.raises(InputError) as err:
        get_method("bim", foo=1.0, random_start=0.1)
    assert str(err.value) == "method bim has no parameter(s) ['foo', 'random_start']; it has ['alpha', 'eps', 'steps']"
    with pytest.raises(InputError, match=r"method shield has no parameter\(s\) \['nope'\]"):
        get_method("shield").with_params(nope=1.0)


def test_with_params_and_retries_keep_the_parameters_typed() -> None:
    shield = get_method("shield")
    lighter = shield.with_params(strength=0.75)
    assert type(lighter.params) is type(shield.params)
    assert lighter.params["strength"] == 0.75 and shield.params["strength"] == 0.5
    assert type(lighter.params["steps"]) is int and lighter.params["grey"] is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        shield.params.strength = 1.0  # type: ignore[misc]
    cw = get_method("cw")
    after = cw.retry.next(cw.params)  # type: ignore[union-attr]
    assert type(after) is type(cw.params) and after["c"] == pytest.approx(1.0) and cw.params["c"] == 0.1
    assert type(after["steps"]) is int and after["prune"] is False


def test_attack_result_params_are_plain_dicts_of_the_run() -> None:
    """``AttackResult.params[i]`` is what the protector records (``res.params[0].get("strength")``)."""
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    x0 = torch.rand(2, 3, 8, 8).mul(255).round().div(255)
    res = run_attack(get_method("shield", strength=0.75), lin, Untargeted(), x0, max_iter=0)
    assert [type(p) for p in res.params] == [dict, dict]
    assert res.params[0].get("strength") == 0.75 and res.params[1]["steps"] == 12 and res.params[1]["grey"] is True
    cw = run_attack(get_method("cw", steps=1), lin, Untargeted(kappa=1e6), x0, max_iter=1)  # never reached
    assert [p["c"] for p in cw.params] == [pytest.approx(100.0)] * 2  # 0.1 x 10 per retry, 3 retries
    assert int(cw.tries[0]) == 4


def test_a_preset_given_as_a_dict_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    fgsm = METHODS["fgsm"]
    spec = dataclasses.replace(fgsm, name="fgsm-dict", presets={"default": {"eps": 1}, "bad": {"eps": "x"},
                                                                  "odd": {"steps": 3}})
    monkeypatch.setitem(METHODS, "fgsm-dict", spec)
    assert get_method("fgsm-dict").params == {"eps": 1.0} and type(get_method("fgsm-dict").params["eps"]) is float
    with pytest.raises(InputError, match="parameter eps must be float"):
        get_method("fgsm-dict", "bad")
    with pytest.raises(InputError, match=r"has no parameter\(s\) \['steps'\]"):
        get_method("fgsm-dict", "odd")
    with pytest.raises(InputError, match="parameter eps must be float"):
        register(spec)  # register validates every preset at once
    with pytest.raises(InputError, match="default preset 'x'"):
        register(dataclasses.replace(spec, default="x"))
    assert isinstance(fgsm, MethodSpec)


def test_importing_the_registry_imports_no_method_module() -> None:
    """No import cycle: the registry stands alone; the method modules register at the first lookup."""
    code = (
        "import sys\n"
        "import jndkit.attacks.registry as r\n"
        "print(sorted(m for m in sys.modules if m.startswith(('jndkit', 'torch'))))\n"
        "print('levels' in r.METHODS)\n"
        "print(sorted(m for m in sys.modules if m.startswith('jndkit.attacks.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "['jndkit', 'jndkit.attacks', 'jndkit.attacks.registry', 'jndkit.errors']"
    assert out[1] == "True"
    loaded = eval(out[2])
    assert {"jndkit.attacks.engine", "jndkit.attacks.methods", "jndkit.attacks.baselines", "jndkit.attacks.seeds",
            "jndkit.attacks.transfer"} <= set(loaded)


def test_face_parameters_are_valid_typed_overrides() -> None:
    from jndkit.face.methods import FACE_LEVELS, FACE_PARAMS

    assert FACE_PARAMS["levels"] is FACE_LEVELS
    for name, overrides in FACE_PARAMS.items():
        params = get_method(name, None, **overrides).params
        assert all(params[k] == v and type(v) is type(params[k]) for k, v in overrides.items()), name
    assert get_method("ddn", None, **FACE_PARAMS["ddn"]).refine == 100
    assert get_method("levels", None, **FACE_LEVELS).params["max_levels"] == 4
