"""Every registered backend against the backend interface written in ``impls/backends/__init__.py``:
an ``OPS`` table with one op per layer of its record, each op of one of the two kinds, and the
hyper-parameters every op receives (``impls._ops.backend_hp``): one vocabulary, no host read of a
device tensor.  What the ops compute is judged by the correctness matrix."""

import importlib
import inspect

import pytest
import torch

from rfbench import impls
from rfbench.impls import _autograd, _ops, _validate
from rfbench.reference import LAYERS


def _module(record):
    """The backend's module, or a skip saying why it cannot be imported here."""
    try:
        return importlib.import_module(record.module, impls.__name__)
    except ImportError as exc:
        pytest.skip(f"{record.name}: {record.module} cannot be imported here ({exc})")


def _takes(fn, names):
    params = list(inspect.signature(fn).parameters)
    return params == list(names)


@pytest.mark.parametrize("name", list(impls.BACKENDS))
def test_every_backend_exports_one_op_per_layer_of_its_record(name):
    record = impls.BACKENDS[name]
    assert set(record.layers) <= set(LAYERS), record.layers
    ops = _module(record).OPS
    assert set(ops) == set(record.layers), f"{name}: OPS has {sorted(ops)}, the record says {sorted(record.layers)}"
    differentiable = set()
    for layer, op in ops.items():
        if isinstance(op, _autograd.Differentiable):
            assert _takes(op.forward, ("t", "hp")), (name, layer)
            differentiable.add(layer)
            continue
        assert _takes(op.forward, ("t", "hp")), (name, layer, "forward")
        assert _takes(op.backward, ("t", "saved", "dy", "hp", "needs")), (name, layer, "backward")
        if hasattr(op, "resave"):
            assert _takes(op.resave, ("t", "hp")), (name, layer, "resave")
    # "double_backward" in the passes means every layer differentiable to any order, and the reverse;
    # a peer is differentiated through its own code by torch autograd, and its double backward is its
    # library's (torchvision's deform_conv2d has none), so it claims none
    if record.origin == "peer":
        assert "double_backward" not in record.passes, name
        return
    assert ("double_backward" in record.passes) == (differentiable == set(ops)), (name, differentiable)


def _tensors(layer, device="cpu"):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device)  # noqa: E731
    x = r(1, 2, 6, 5)
    if layer in ("dau", "dau_gauss"):
        return {"x": x, "weight": r(3, 2, 2), "mu_x": 9 * r(3, 2, 2), "mu_y": r(3, 2, 2), "sigma": r(()).abs() + 1}
    if layer == "acu":
        return {"x": x, "weight": r(3, 2, 4), "pos_x": r(4), "pos_y": r(4)}
    return {"x": x, "alpha": r(3, 2, 6), "sigma": r(()).abs() + 1}


@pytest.mark.parametrize("layer", list(LAYERS))
def test_backend_hyper_parameters_have_one_vocabulary(layer):
    """Every hyper-parameter of the table by its name, the radius the API's (resolved from sigma when None),
    and ``keep <= radius`` for a layer with a radius (below it when the radius reaches beyond the image)."""
    spec = LAYERS[layer]
    t = {n: _tensors(layer).get(n) for n in spec.tensors}
    hp = {**spec.defaults(), **({"order": 2} if layer == "njet" else {})}
    for radius in (None, 40) if spec.radius else (None,):
        if spec.radius:
            hp[spec.radius] = radius
        if hp.get(spec.radius, 0) is None and spec.param(spec.radius).factor is None:
            continue  # dau_gauss: no default radius
        got = _ops.backend_hp(spec, t, hp)
        assert set(got) == {p.name for p in spec.params} | ({"keep"} if spec.radius else set())
        if not spec.radius:
            continue
        if radius is None:
            assert got[spec.radius] == spec.param(spec.radius).radius_from(float(t["sigma"]), got)
        assert isinstance(got[spec.radius], int) and got[spec.radius] == (radius or got[spec.radius])
        assert 0 <= got["keep"] <= got[spec.radius]
        if radius == 40:  # far beyond the 6 x 5 image: taps are dropped
            assert got["keep"] < radius


def test_dau_keeps_the_whole_blur_where_reading_the_displacements_is_not_free(monkeypatch):
    """On a device (emulated: ``free_to_read`` False) ``keep`` is the radius, and no tensor value is read."""
    spec = LAYERS["dau"]
    t = {n: _tensors("dau").get(n) for n in spec.tensors}
    monkeypatch.setattr(_validate, "free_to_read", lambda t: False)
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):

        def read(self, *a, _name=name, **k):
            raise AssertionError(f"host read of a tensor value: Tensor.{_name}")

        monkeypatch.setattr(torch.Tensor, name, read)
    got = _ops.backend_hp(spec, t, {"stride": 1, "blur_radius": 30, "mu_grad": "exact"})
    assert got["keep"] == got["blur_radius"] == 30
