"""The layer table (``reference/layers.py``) is the one home of a layer's facts: the signatures that
restate it for readers (the public functions, the reference's own functions), the registry, the
custom operators' schemas and the test cases agree with it."""

import inspect

import pytest

from rfbench import impls
from rfbench.harness import cases
from rfbench.impls import _registry
from rfbench.reference import LAYERS, REQUIRED


def _keywords(fn, skip=("absolute",)):
    """``fn``'s keyword-only parameters -> ``{name: default or REQUIRED}``."""
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY and p.name not in skip:
            out[p.name] = REQUIRED if p.default is p.empty else p.default
    return out


def _positional(fn):
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds]


@pytest.mark.parametrize("name", list(LAYERS))
def test_the_public_function_has_the_tables_arguments(name):
    layer = LAYERS[name]
    fn = getattr(impls, layer.function)
    assert _positional(fn) == list(layer.tensors)
    assert inspect.signature(fn).parameters["bias"].default is None
    want = {p.name: p.default for p in layer.params}
    assert _keywords(fn) == {**want, "backend": "auto"}


@pytest.mark.parametrize("name", list(LAYERS))
def test_the_reference_takes_the_tables_hyper_parameters(name):
    layer = LAYERS[name]
    assert _positional(layer.forward) == list(layer.tensors)
    assert _positional(layer.backward) == [*layer.tensors, "dy"]
    assert _keywords(layer.forward) == {p.name: p.default for p in layer.params if p.forward}
    assert _keywords(layer.backward) == {p.name: p.default for p in layer.params}


def test_radius_rules():
    """Each default radius is a rule of the table: ``ceil(3 sigma)`` for dau, ``ceil(extent sigma)`` for njet."""
    from rfbench.reference import dau, njet

    assert LAYERS["dau"].param("blur_radius").radius_from(0.7, {}) == 3 == dau.default_blur_radius(0.7)
    assert LAYERS["njet"].param("radius").radius_from(1.1, {"extent": 2.0}) == 3 == njet.default_radius(1.1)
    assert LAYERS["dau_gauss"].param("radius").default is REQUIRED and LAYERS["acu"].radius is None
    case = cases.Case("t", "njet", sigma=1.1)
    assert case.resolved_radius() == 3 and case.hparams() == {"order": 2, "radius": 3, "stride": 1}


def test_the_registry_and_the_custom_operators_read_the_table():
    from rfbench.impls import _ops  # noqa: F401 (registers torch.ops.rfbench.*)

    import torch

    assert _registry.LAYERS == tuple(LAYERS)
    for name, layer in LAYERS.items():
        schema = str(getattr(torch.ops.rfbench, name).default._schema)
        for p in layer.params:
            assert f"{p.schema} {p.name}" in schema, (name, schema)
        assert all(f" {t}" in schema for t in layer.tensors), (name, schema)


def test_every_case_sets_only_the_tables_hyper_parameters():
    for case in cases.grid("full"):
        layer = LAYERS[case.layer]
        hp = case.hparams(backward=True)
        assert set(hp) <= {p.name for p in layer.params}, case.id
        assert {p.name for p in layer.params if p.default is REQUIRED} <= set(hp), case.id
