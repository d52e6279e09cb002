"""Bad input (reference/README.md section 7): every rule raises ValueError/TypeError naming the argument,
what was expected and what came, before anything is computed; the inputs are left as they were."""

import math

import pytest
import torch

from rfbench import impls

F64 = torch.float64


def valid(layer):
    """Valid arguments ``(args, kwargs)`` of ``layer``'s public function."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, dtype=F64, generator=g)  # noqa: E731
    x = r(2, 3, 6, 5)
    if layer in ("dau", "dau_gauss"):
        args = {
            "x": x,
            "weight": r(4, 3, 2),
            "mu_x": r(4, 3, 2),
            "mu_y": r(4, 3, 2),
            "sigma": torch.tensor(0.8, dtype=F64),
            "bias": r(4),
        }
        kw = {"radius": 2} if layer == "dau_gauss" else {}
    elif layer == "acu":
        args = {"x": x, "weight": r(4, 3, 5), "pos_x": r(5), "pos_y": r(5), "bias": r(4)}
        kw = {}
    else:
        args = {"x": x, "alpha": r(4, 3, 6), "sigma": torch.tensor(1.0, dtype=F64), "bias": r(4)}
        kw = {"order": 2}
    return args, kw


FN = {"dau": impls.dau_conv2d, "dau_gauss": impls.dau_gauss_conv2d, "acu": impls.acu_conv2d, "njet": impls.njet_conv2d}
ALL = tuple(FN)
UNITS = ("dau", "dau_gauss")
SCALAR_SIGMA = ("dau", "njet")
NAN, INF = math.nan, math.inf


def _with(name, fn):
    return lambda a, k: a.__setitem__(name, fn(a[name]))


def _kw(name, value):
    return lambda a, k: k.__setitem__(name, value)


# (layers, what, mutation(args, kwargs), exception, argument named in the message)
RULES = [
    (ALL, "x not a tensor", _with("x", lambda t: t.numpy()), TypeError, "x"),
    (ALL, "x 3-D", _with("x", lambda t: t[0]), ValueError, "x"),
    (ALL, "x 5-D", _with("x", lambda t: t[None]), ValueError, "x"),
    (ALL, "x integer dtype", _with("x", lambda t: t.to(torch.int64)), TypeError, "x"),
    (ALL, "x empty width", _with("x", lambda t: t[..., :0]), ValueError, "x"),
    (ALL, "bias wrong length", _with("bias", lambda t: t[:3]), ValueError, "bias"),
    (ALL, "bias float32 (mixed dtypes)", _with("bias", lambda t: t.float()), TypeError, "bias"),
    (ALL, "bias on another device", _with("bias", lambda t: t.to("meta")), ValueError, "bias"),
    (ALL, "stride 0", _kw("stride", 0), ValueError, "stride"),
    (ALL, "stride 1.5", _kw("stride", 1.5), TypeError, "stride"),
    (ALL, "stride True", _kw("stride", True), TypeError, "stride"),
    (ALL, "unknown backend", _kw("backend", "nope"), ValueError, "backend"),
    (UNITS + ("acu",), "weight wrong S", _with("weight", lambda t: t[:, :2]), ValueError, "weight"),
    (UNITS + ("acu",), "weight 2-D", _with("weight", lambda t: t[:, :, 0]), ValueError, "weight"),
    (UNITS + ("acu",), "weight integer", _with("weight", lambda t: t.to(torch.int32)), TypeError, "weight"),
    (UNITS, "mu_x shape differs from weight", _with("mu_x", lambda t: t[..., :1]), ValueError, "mu_x"),
    (UNITS, "mu_y float32", _with("mu_y", lambda t: t.float()), TypeError, "mu_y"),
    (UNITS, "mu_x NaN", _with("mu_x", lambda t: t.index_fill(0, torch.tensor([1]), NAN)), ValueError, "mu_x"),
    (UNITS, "mu_y inf", _with("mu_y", lambda t: t.index_fill(2, torch.tensor([0]), INF)), ValueError, "mu_y"),
    (SCALAR_SIGMA, "sigma vector", _with("sigma", lambda t: t.repeat(2)), ValueError, "sigma"),
    (ALL[:2] + ("njet",), "sigma zero", _with("sigma", lambda t: t * 0), ValueError, "sigma"),
    (ALL[:2] + ("njet",), "sigma negative", _with("sigma", lambda t: -t), ValueError, "sigma"),
    (ALL[:2] + ("njet",), "sigma NaN", _with("sigma", lambda t: t * NAN), ValueError, "sigma"),
    (ALL[:2] + ("njet",), "sigma inf", _with("sigma", lambda t: t * INF), ValueError, "sigma"),
    (ALL[:2] + ("njet",), "sigma float32", _with("sigma", lambda t: t.float()), TypeError, "sigma"),
    (
        ("dau_gauss",),
        "sigma [F,S,K] negative",
        lambda a, k: a.__setitem__("sigma", -torch.ones(4, 3, 2, dtype=F64)),
        ValueError,
        "sigma",
    ),
    (
        ("dau_gauss",),
        "sigma wrong 3-D shape",
        lambda a, k: a.__setitem__("sigma", torch.ones(4, 3, 1, dtype=F64)),
        ValueError,
        "sigma",
    ),
    (("dau",), "blur_radius negative", _kw("blur_radius", -1), ValueError, "blur_radius"),
    (("dau",), "blur_radius float", _kw("blur_radius", 2.0), TypeError, "blur_radius"),
    (("dau",), "mu_grad unknown", _kw("mu_grad", "autograd"), ValueError, "mu_grad"),
    (("dau_gauss",), "radius negative", _kw("radius", -2), ValueError, "radius"),
    (("dau_gauss",), "radius missing", lambda a, k: k.__setitem__("radius", None), TypeError, "radius"),
    (("acu",), "pos_x length differs from K", _with("pos_x", lambda t: t[:4]), ValueError, "pos_x"),
    (("acu",), "pos_y shape differs from pos_x", _with("pos_y", lambda t: t.reshape(1, 5)), ValueError, "pos_y"),
    (("acu",), "groups do not divide F", _with("pos_x", lambda t: t.repeat(3, 1)), ValueError, "pos_x"),
    (("acu",), "pos_x NaN", _with("pos_x", lambda t: t.index_fill(0, torch.tensor([2]), NAN)), ValueError, "pos_x"),
    (("acu",), "pos_y inf", _with("pos_y", lambda t: t.index_fill(0, torch.tensor([0]), -INF)), ValueError, "pos_y"),
    (("njet",), "order negative", _kw("order", -1), ValueError, "order"),
    (("njet",), "order float", _kw("order", 2.0), TypeError, "order"),
    (("njet",), "alpha J mismatches order", _with("alpha", lambda t: t[..., :5]), ValueError, "alpha"),
    (("njet",), "radius negative", _kw("radius", -1), ValueError, "radius"),
    (("njet",), "extent zero", _kw("extent", 0.0), ValueError, "extent"),
]

PARAMS = [(layer, what, mut, exc, name) for layers, what, mut, exc, name in RULES for layer in layers]


@pytest.mark.parametrize("layer,what,mutate,exc,name", PARAMS, ids=[f"{p[0]}-{p[1]}" for p in PARAMS])
def test_bad_input_is_refused_with_a_clear_message(layer, what, mutate, exc, name):
    args, kw = valid(layer)
    mutate(args, kw)
    before = {k: v.clone() for k, v in args.items() if isinstance(v, torch.Tensor) and v.device.type != "meta"}
    with pytest.raises(exc) as info:
        FN[layer](**args, **kw)
    msg = str(info.value)
    assert f"'{name}'" in msg and "expected" in msg and "got" in msg, msg
    for k, v in before.items():
        torch.testing.assert_close(args[k], v, rtol=0, atol=0, equal_nan=True, msg=f"{k} modified")


@pytest.mark.parametrize("layer", ALL)
def test_valid_arguments_pass(layer):
    args, kw = valid(layer)
    assert FN[layer](**args, **kw).shape[:2] == (2, 4)


@pytest.mark.parametrize("layer", ALL)
def test_nan_in_x_propagates_to_the_outputs_that_read_it(layer):
    """NaN in ``x`` is not an error: the outputs that read the pixel are NaN, far ones are not."""
    args, kw = valid(layer)
    x = torch.zeros(1, 3, 40, 40, dtype=F64)
    x[0, 1, 20, 20] = NAN
    args["x"] = x
    for name in ("mu_x", "mu_y", "pos_x", "pos_y"):
        if name in args:
            args[name] = args[name].clamp(-1.5, 1.5)
    y = FN[layer](**args, **kw)
    assert y[0, :, 20, 20].isnan().all()
    assert not y[0, :, :8, :8].isnan().any() and not y[0, :, 32:, 32:].isnan().any()


@pytest.mark.parametrize("layer", ("dau", "dau_gauss", "njet"))
def test_python_float_sigma_is_accepted(layer):
    args, kw = valid(layer)
    ref = FN[layer](**args, **kw)
    args["sigma"] = float(args["sigma"])
    torch.testing.assert_close(FN[layer](**args, **kw), ref)
