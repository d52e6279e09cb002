"""Channel groups (``groups`` of dau, dau_gauss and njet; reference/README.md section 6).

A layer with ``G`` groups is ``G`` independent layers on slices of the channels.  Checked three ways:

- the reference: grouped equals the ungrouped layer whose weights are zero outside the groups' blocks
  (an independent statement of the definition, not the reference's own per-group loop);
- every CPU backend: grouped equals the same backend applied per group and concatenated, outputs and
  every gradient in float64, judged by the derived bound of ``harness.metrics`` (twice the bound of
  one result: both sides are within it of the exact value);
- the correctness matrix's judge (``harness.runner``) on the grouped and depthwise cases of the grids,
  on every CPU backend, float32 and float64 (numba's dau on both of its code paths).

Then the argument checks and the cost model.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from rfbench import impls
from rfbench.impls import nn as rnn
from rfbench.harness import bench, cases, costmodel, metrics, runner
from rfbench.reference import LAYERS

CPU = [b for b, rec in impls.BACKENDS.items() if "cpu" in rec.devices and rec.origin == "ours"]  # peers: test_peers.py
GROUPED = ("dau", "dau_gauss", "njet")

# Awkward grouped shapes: F/G != S/G, stride 2 and 3, a 1 x 1 image, far displacements, depthwise,
# per-unit sigma, the Eq. 16 displacement gradient.
AWKWARD = [
    cases.Case("g3", "dau", n=2, s=6, f=9, h=7, w=5, k=3, sigma=0.7, channel_groups=3, seed=1),
    cases.Case("g2-stride3-gauss", "dau", s=4, f=2, h=8, w=7, k=2, stride=3, mu_grad="gauss", channel_groups=2),
    cases.Case("dw-far", "dau", s=5, f=5, h=6, w=9, k=2, offset=7.0, channel_groups=5, seed=2),
    cases.Case("dw-pixel", "dau", n=1, s=3, f=3, h=1, w=1, k=2, channel_groups=3, seed=3),
    cases.Case("g2-per-unit", "dau_gauss", s=4, f=6, k=2, radius=2, per_unit_sigma=True, channel_groups=2),
    cases.Case("dw-stride2", "dau_gauss", s=3, f=3, h=9, w=8, k=3, radius=3, stride=2, channel_groups=3),
    cases.Case("g2", "njet", s=4, f=6, order=3, sigma=1.1, channel_groups=2, seed=4),
    cases.Case("dw-stride3", "njet", s=3, f=3, h=8, w=10, order=1, stride=3, channel_groups=3, seed=5),
]


def _tensors(case, arrays):
    return {k: None if v is None else torch.from_numpy(np.array(v)).requires_grad_(True) for k, v in arrays.items()}


def _run(case, backend, t, dy, groups):
    """Forward and every gradient of ``case``'s layer on ``backend`` with ``groups`` -> dict of arrays."""
    hp = {**case.hparams(backward=True), "groups": groups}
    y = getattr(impls, LAYERS[case.layer].function)(**t, **hp, backend=backend)
    names = [k for k, v in t.items() if v is not None]
    grads = torch.autograd.grad(y, [t[k] for k in names], torch.from_numpy(dy))
    return {"forward": y.detach().numpy(), **{k: g.numpy() for k, g in zip(names, grads)}}


def _slice(name, a, g, groups):
    """Group ``g``'s part of argument ``name`` (``x`` by channel, a scalar sigma whole, the rest by ``F``)."""
    if a is None or (name == "sigma" and np.ndim(a) < 3):
        return a
    axis = 1 if name in ("x", "forward", "dy") else 0
    n = a.shape[axis] // groups
    return np.take(a, range(g * n, (g + 1) * n), axis=axis)


def _per_group(case, backend, arrays, dy):
    """The same backend applied per group, joined like the layer's outputs and gradients."""
    groups, parts = case.channel_groups, []
    for g in range(groups):
        sub = {k: _slice(k, v, g, groups) for k, v in arrays.items()}
        parts.append(_run(case, backend, _tensors(case, sub), np.ascontiguousarray(_slice("dy", dy, g, groups)), 1))
    out = {}
    for k in parts[0]:
        if k == "sigma" and np.ndim(arrays["sigma"]) < 3:
            out[k] = sum(p[k] for p in parts)
        else:
            out[k] = np.concatenate([p[k] for p in parts], axis=1 if k in ("x", "forward") else 0)
    return out


def _judge(case, got, want, mag, arrays, dy, factor, label):
    bad = []
    for out, ref in want.items():
        if ref is None:
            continue
        floor = metrics.floor(case, out, arrays, dy, "float64")
        m = metrics.compare(got[out], ref, mag[out], metrics.EPS["float64"], metrics.n_terms(case, out), factor * floor)
        if not m["ok"]:
            bad.append(f"{out}: err/bound={m['bound_ratio']:.3g} {m['note']}")
    assert not bad, f"{case.id} {label}:\n" + "\n".join(bad)


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("case", AWKWARD, ids=[c.id for c in AWKWARD])
def test_grouped_equals_the_layer_per_group(case, backend, seed, one_thread):
    arrays, dy, _, mag = runner.reference_results(case, "float64", seed)
    grouped = _run(case, backend, _tensors(case, arrays), dy, case.channel_groups)
    per = _per_group(case, backend, arrays, dy)
    # both within one bound of the exact value: the relative part of compare's bound is 2 u64 n mag, the floor doubled
    _judge(case, grouped, per, mag, arrays, dy, 2.0, f"{backend}: grouped vs per group")


def _block_diagonal(case, arrays):
    """The ungrouped layer's arguments equal to ``case``'s grouped one: weights zero outside each group's block
    of input channels (displacements 0, a per-unit sigma 1 there: they meet only zero weights)."""
    groups, s_ = case.channel_groups, case.s
    sg, fg = s_ // groups, case.f // groups
    out = dict(arrays)
    for name in ("weight", "mu_x", "mu_y", "alpha", "sigma"):
        a = arrays.get(name)
        if a is None or (name == "sigma" and np.ndim(a) < 3):
            continue
        full = np.full((a.shape[0], s_, a.shape[2]), 1.0 if name == "sigma" else 0.0)
        for f in range(a.shape[0]):
            g = f // fg
            full[f, g * sg : (g + 1) * sg] = a[f]
        out[name] = full
    return out


def _blocks(a, case):
    """The entries of an ungrouped ``[F, S, ...]`` gradient that belong to the groups' blocks -> ``[F, S/G, ...]``."""
    groups = case.channel_groups
    sg, fg = case.s // groups, case.f // groups
    return np.stack([a[f, (f // fg) * sg : (f // fg + 1) * sg] for f in range(a.shape[0])])


@pytest.mark.parametrize("case", AWKWARD, ids=[c.id for c in AWKWARD])
def test_the_reference_equals_the_block_diagonal_layer(case, seed):
    """The grouped reference against its definition: the dense layer with zero weights between groups."""
    layer = LAYERS[case.layer]
    arrays, dy, exact, mag = runner.reference_results(case, "float64", seed)
    dense = _block_diagonal(case, arrays)
    plain = replace(case, channel_groups=1)
    hp = plain.hparams(backward=True)
    got = {"forward": layer.forward(**dense, **plain.hparams()), **layer.backward(**dense, dy=dy, **hp)}
    for name in ("weight", "mu_x", "mu_y", "alpha"):
        if name in got:
            got[name] = _blocks(got[name], case)
    if np.ndim(arrays["sigma"]) == 3:
        got["sigma"] = _blocks(got["sigma"], case)
    # the dense layer sums more terms (zeros among them): its own term count bounds the association's rounding
    for out, ref in exact.items():
        if ref is None:
            continue
        floor = metrics.floor(plain, out, arrays, dy, "float64")
        m = metrics.compare(got[out], ref, mag[out], metrics.EPS["float64"], metrics.n_terms(plain, out), floor)
        assert m["ok"], f"{case.id} {out}: err/bound={m['bound_ratio']:.3g} {m['note']}"


MATRIX = [c for c in cases.grid("default") if c.channel_groups > 1]


@pytest.fixture(params=["wide", "rows"])
def numba_path(request, monkeypatch):
    """numba's dau on the register-blocked window kernels and on the per-row ones."""
    layers = pytest.importorskip("rfbench.impls.backends.numba.layers")
    monkeypatch.setattr(layers, "_WASTE", float("inf") if request.param == "wide" else 0.0)
    return request.param


def _matrix(case, backend, dtype, seed, op=None):
    rows = runner.run_case(case, backend, dtype, "cpu", seed, op=op)
    if rows[0]["status"] == "skip":
        pytest.skip(f"{backend}: {rows[0]['reason']}")
    bad = [
        f"{r['output']}: {r['status']} err/bound={r['bound_ratio']} {r['reason']}"
        for r in rows
        if r["status"] != "pass"
    ]
    assert not bad, f"{case.id} on {backend} {dtype} (seed {seed}):\n" + "\n".join(bad)


def test_the_grids_hold_grouped_and_depthwise_cases():
    ids = {c.id for c in MATRIX}
    assert {"dau-depthwise", "dau_gauss-depthwise", "njet-depthwise-stride2"} <= {c.id for c in cases.grid("smoke")}
    assert {"dau-groups2", "dau_gauss-groups2", "njet-groups2-stride2"} <= ids
    paper = {c.id: c for c in cases.grid("paper")}
    for layer in GROUPED:
        c = paper[f"{layer}-paper-depthwise"]
        assert c.channel_groups == c.s == c.f
    assert all(c.layer in GROUPED for c in MATRIX)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", [b for b in CPU if b != "numba"])
@pytest.mark.parametrize("case", MATRIX, ids=[c.id for c in MATRIX])
def test_matrix_on_grouped_cases(case, backend, dtype, seed):
    _matrix(case, backend, dtype, seed)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", MATRIX, ids=[c.id for c in MATRIX])
def test_matrix_on_grouped_cases_numba(case, dtype, seed, numba_path):
    if case.layer != "dau" and numba_path == "rows":
        pytest.skip("one code path: only numba's dau has two")
    _matrix(case, "numba", dtype, seed)


def test_numba_depthwise_takes_the_register_blocked_path():
    """The paper's depthwise spreads (up to 4 px on 32 x 32) run the window kernels, as the dense layer does."""
    layers = pytest.importorskip("rfbench.impls.backends.numba.layers")
    c = cases.Case("dw", "dau", n=1, s=8, f=8, h=32, w=32, k=2, spread=4.0, radius=2, channel_groups=8)
    fy, fx = (np.floor(c.arrays()[k]).astype(np.int64) for k in ("mu_y", "mu_x"))
    assert fy.shape == (8, 1, 2)
    assert layers._wide_window(fy, fx, 32, 32, 32, 32, 2, 1) is not None


# ---------------------------------------------------------------- argument checks


def _args(layer, s=4, f=6, per_group=2):
    x = torch.randn(1, s, 5, 5)
    if layer == "njet":
        return (x, torch.randn(f, per_group, 6), 1.0), {"order": 2}
    w = torch.randn(f, per_group, 2)
    hp = {"radius": 2} if layer == "dau_gauss" else {}
    return (x, w, w.clone(), w.clone(), 0.8), hp


@pytest.mark.parametrize("layer", GROUPED)
def test_groups_are_checked_at_the_public_entry(layer):
    fn = getattr(impls, LAYERS[layer].function)
    wname = "alpha" if layer == "njet" else "weight"
    args, hp = _args(layer)
    assert fn(*args, **hp, groups=2, backend="torch-naive").shape == (1, 6, 5, 5)
    with pytest.raises(ValueError, match=r"argument 'groups' expected a divisor of S = x.shape\[1\] = 4, got 3"):
        fn(*args, **hp, groups=3)
    with pytest.raises(ValueError, match="argument 'groups' expected an int >= 1, got 0"):
        fn(*args, **hp, groups=0)
    with pytest.raises(TypeError, match="argument 'groups' expected an int >= 1, got float 2.0"):
        fn(*args, **hp, groups=2.0)
    with pytest.raises(ValueError, match=rf"argument '{wname}' expected shape \[F, 1, .*S/groups = 4/4"):
        fn(*args, **hp, groups=4)
    args, hp = _args(layer, s=4, f=5)
    with pytest.raises(ValueError, match=rf"argument 'groups' expected a divisor of F = {wname}.shape\[0\] = 5, got 2"):
        fn(*args, **hp, groups=2)


@pytest.mark.parametrize("name", ["DAUConv2d", "DAUGaussConv2d", "NJetConv2d"])
def test_modules_take_groups_like_conv2d(name):
    cls = getattr(rnn, name)
    m = cls(6, 4, groups=2, backend="torch-naive", dtype=torch.float64)
    first = m.alpha if name == "NJetConv2d" else m.weight
    assert first.shape[:2] == (4, 3) and "groups=2" in repr(m)
    assert m(torch.randn(2, 6, 7, 7, dtype=torch.float64)).shape == (2, 4, 7, 7)
    assert "groups" not in repr(cls(6, 4))
    with pytest.raises(ValueError, match=f"{name}: argument 'groups' expected a divisor of out_channels = 4, got 3"):
        cls(6, 4, groups=3)
    with pytest.raises(ValueError, match=f"{name}: argument 'groups' expected a divisor of in_channels = 6, got 4"):
        cls(6, 4, groups=4)


# ---------------------------------------------------------------- cost model


def test_cost_model_counts_the_channel_pairs_of_the_groups():
    """MACs of the products scale with ``F S/G``; the blur and the basis passes, once per input channel, do not;
    conv2d-std is the depthwise dense conv."""
    dense = cases.Case("d", "dau", n=1, s=8, f=8, h=16, w=16, k=2, spread=4.0, radius=2)
    dw = replace(dense, channel_groups=8)
    a = dense.arrays()
    blur = 1 * 16 * 16 * 8 * 2 * 5
    assert costmodel.efficient_macs(dense, "forward") - blur == 8 * (costmodel.efficient_macs(dw, "forward") - blur)
    side = costmodel.standard_side(dense, a)
    assert costmodel.std_macs(dw, side, "forward") == 16 * 16 * 8 * side * side
    m = costmodel.model(dw, dw.arrays(), "forward")
    assert m["std_gamma"] == pytest.approx(m["macs_std"] / m["macs_efficient"])


def test_conv2d_std_is_timed_with_the_cases_groups():
    c = cases.Case("dw", "dau", n=1, s=4, f=4, h=6, w=6, k=2, channel_groups=4)
    t = runner.tensors(c, c.arrays(), "float32", "cpu")
    both, _ = bench._std_callables(c, 5, t, torch.zeros(1, 4, 6, 6), "forward+backward", 0)
    both(None)  # a [4, 1, 5, 5] kernel runs only with groups=4


def test_the_cuda_backends_take_groups_per_group():
    """numba-cuda and cupy (no device here) get channel groups from ``_groups.per_group``, as torch-fast does."""
    from rfbench.impls import _groups
    from rfbench.impls.backends import torch_fast
    from rfbench.impls.backends.cuda import layers

    for ops in (layers.ops(prims=None), torch_fast.OPS):
        assert all(isinstance(ops[k], _groups._Grouped) for k in GROUPED)
        assert not isinstance(ops["acu"], _groups._Grouped)


SIM = [
    cases.Case("sim-dw", "dau", n=1, s=2, f=2, h=5, w=4, k=2, sigma=0.8, spread=3.0, radius=2, channel_groups=2),
    cases.Case("sim-g2", "dau_gauss", n=1, s=2, f=4, h=5, w=4, k=2, radius=2, per_unit_sigma=True, channel_groups=2),
    cases.Case("sim-dw-stride2", "njet", n=1, s=2, f=2, h=5, w=4, radius=2, stride=2, channel_groups=2),
]


@pytest.mark.parametrize("case", SIM, ids=[c.id for c in SIM])
def test_numba_cuda_groups_under_the_simulator(case, seed):
    """numba-cuda's per-group path run by Numba's CUDA simulator on CPU tensors, judged against the reference."""
    from numba import config

    if not config.ENABLE_CUDASIM:
        pytest.skip("numba CUDA simulator not enabled (NUMBA_ENABLE_CUDASIM=1; set by conftest without a GPU)")
    from rfbench.impls.backends.cuda import numba_prims

    _matrix(case, "numba-cuda", "float64", seed, op=numba_prims.OPS[case.layer])


@pytest.mark.parametrize("name", ["DAUConv2d", "DAUGaussConv2d", "NJetConv2d"])
def test_grouped_modules_on_meta_tensors(name):
    """The custom operator's fake implementation gives the grouped output shape without computing."""
    m = getattr(rnn, name)(8, 8, groups=8, stride=2, device="meta")
    y = m(torch.empty(2, 8, 9, 7, device="meta"))
    assert y.is_meta and y.shape == (2, 8, 5, 4)
