"""Backend ``numba`` against the float64 reference: forward and every gradient, all layers."""

import numpy as np
import pytest
import torch

import impls

pytest.importorskip("numba")
from impls import numba_cpu  # noqa: E402


N, S, F, K, H, W = 2, 3, 4, 3, 7, 6
TOL = {torch.float64: 1e-12, torch.float32: 5e-6}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(shape, dtype=torch.float64, generator=_gen(seed))


def _uniform(lo, hi, *shape, seed=0):
    return lo + (hi - lo) * torch.rand(shape, dtype=torch.float64, generator=_gen(seed))


def _run(fn, args, kw, backend, dtype):
    """Output and gradients of every tensor argument for a fixed random ``dy``. -> list of tensors"""
    ts = [None if a is None else a.to(dtype).requires_grad_(True) for a in args]
    y = fn(*ts, **kw, backend=backend)
    dy = torch.randn(y.shape, dtype=torch.float64, generator=_gen(99)).to(dtype)
    leaves = [a for a in ts if a is not None]
    return [y.detach(), *torch.autograd.grad(y, leaves, dy)] if y.numel() else [y.detach()]


def _compare(fn, args, kw, dtype=torch.float64):
    got = _run(fn, args, kw, "numba", dtype)
    want = _run(fn, args, kw, "reference", torch.float64)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == dtype and a.shape == b.shape, i
        err = float((a.double() - b).norm() / b.norm().clamp_min(1e-300))
        assert err < TOL[dtype], f"output {i} (0 = y, then grads in argument order): rel err {err:.2e}"


def _dau_args(mu_lo=-6.0, mu_hi=6.0, sigma=0.7, bias=True, hw=(H, W)):
    return (
        _randn(N, S, *hw, seed=1),
        _randn(F, S, K, seed=2),
        _uniform(mu_lo, mu_hi, F, S, K, seed=3),
        _uniform(mu_lo, mu_hi, F, S, K, seed=4),
        torch.tensor(sigma, dtype=torch.float64),
        _randn(F, seed=5) if bias else None,
    )


@pytest.fixture(params=["wide", "rows"])
def dau_path(request, monkeypatch):
    """Both DAU code paths on the same cases: the register-blocked window kernels (any column
    spread) or the per-row ones."""
    monkeypatch.setattr(numba_cpu, "_WASTE", float("inf") if request.param == "wide" else 0.0)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mu_grad", ["exact", "gauss"])
@pytest.mark.parametrize("stride", [1, 2])
def test_dau(stride, mu_grad, dtype, dau_path):
    _compare(impls.dau_conv2d, _dau_args(), {"stride": stride, "mu_grad": mu_grad}, dtype)


def test_dau_takes_the_wide_path_at_paper_spreads():
    """Units displaced by up to 4 px on a 32 x 32 image run the register-blocked window kernels."""
    fy = torch.arange(-4, 4).repeat(4).reshape(4, 4, 2).numpy()
    assert numba_cpu._wide_window(fy, fy[::-1].copy(), 32, 32, 32, 32, 2, 1) is not None
    assert numba_cpu._wide_window(fy, fy, 32, 32, 32, 32, 2, 2) is None
    assert numba_cpu._wide_window(fy * 3, fy, 32, 32, 32, 32, 2, 1) is not None
    assert numba_cpu._wide_window(fy, fy * 3, 32, 32, 32, 32, 2, 1) is None


@pytest.mark.parametrize("mu_grad", ["exact", "gauss"])
def test_dau_far_and_integer(mu_grad, dau_path):
    args = _dau_args(18.0, 22.0, hw=(5, 5))
    args[2][0, 0, 0] = -40.0  # far outside a 5x5 image: reads zeros
    args[3][1, 1, 1] = 3.0  # integer position: right derivative
    _compare(impls.dau_conv2d, args, {"stride": 1, "mu_grad": mu_grad, "blur_radius": 3})
    _compare(impls.dau_conv2d, _dau_args(-1.5, 1.5, sigma=0.4, bias=False), {"stride": 3, "blur_radius": 0})


@pytest.mark.parametrize("lo, hi", [(2.2, 2.8), (-3.8, -3.2), (-2.8, 4.6)])
@pytest.mark.parametrize("blur_radius", [0, 1])
def test_dau_units_beyond_the_blur_reach(lo, hi, blur_radius, dau_path):
    """Every unit displaced further than the blur reaches, on a narrow image: the wide path's
    padded ``dy`` of the input gradient is narrower than ``dy`` itself (the fuzz suite found a
    broadcast error here; its ``dy`` entries beyond the support are terms of nothing)."""
    _compare(impls.dau_conv2d, _dau_args(lo, hi, hw=(1, 3)), {"stride": 1, "blur_radius": blur_radius})
    _compare(impls.dau_conv2d, _dau_args(lo, hi, hw=(4, 3)), {"stride": 1, "blur_radius": blur_radius})


@pytest.mark.parametrize("hw", [(9, 17), (19, 33), (2, 40), (17, 16)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mu_grad", ["exact", "gauss"])
def test_dau_register_blocks(hw, dtype, mu_grad, monkeypatch):
    """The register-blocked kernels (``_rb_shift``, ``_rb_taps``) where no block is filled exactly:
    rows not a multiple of ``_RB``, columns not a multiple of ``_CW`` (a tail of lanes in the tap
    sums, and a whole block of it at width 2 and 17), more channels than one group or task
    (``_SG``, ``_TF``, ``_TS`` = 16), and three units per pair (groups of four units cut short).
    Judged by the derived bound of reference/README.md section 9 (FMA contraction included)."""
    from harness import cases, runner

    monkeypatch.setattr(numba_cpu, "_WASTE", float("inf"))
    case = cases.Case("rb", "dau", n=2, s=17, f=18, k=3, h=hw[0], w=hw[1], sigma=0.6, spread=4.5, mu_grad=mu_grad)
    bad = [r for r in runner.run_case(case, "numba", dtype) if r["status"] != "pass"]
    assert not bad, [(r["output"], r["rel_err"], r["bound_ratio"], r["reason"]) for r in bad]


def test_rb_taps_short_groups_and_inactive_units():
    """``_rb_taps`` against a float64 sum: units switched off (offset < 0) leave zeros; output
    channels with 0 to 5 active units (groups of four cut short, repeated last unit dropped)."""
    rng = np.random.default_rng(0)
    n_, s_, f_, k_, ho, wo = 2, 3, 6, 2, 5, 21
    hc, pw = ho + 3, wo + 3
    c = rng.standard_normal((n_, s_, hc, pw))
    d = rng.standard_normal((n_, f_, ho, wo))
    off = rng.integers(0, 3, (f_, s_, k_)) * pw + rng.integers(0, 3, (f_, s_, k_))
    for f in range(f_):
        off[f].reshape(-1)[: f + 1 if f < 5 else 0] = -1  # f keeps 6 - (f + 1) units (f = 5: all 6)
    got = numba_cpu._rb_taps(c, d, *numba_cpu.unit_lists(off, hc * pw), k_, 1)
    want = np.zeros((f_, s_, k_, 4))
    for f, s, k in zip(*np.nonzero(off >= 0)):
        r0, q0 = divmod(off[f, s, k], pw)
        for m in range(4):
            da, db = divmod(m, 2)
            want[f, s, k, m] = (d[:, f] * c[:, s, r0 + da : r0 + da + ho, q0 + db : q0 + db + wo]).sum()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sigma_shape", [(), (F, S, K)])
@pytest.mark.parametrize("stride", [1, 2])
def test_dau_gauss(stride, sigma_shape):
    x, w, mx, my, _, b = _dau_args(-2.0, 2.0)
    sigma = _uniform(0.5, 1.5, *sigma_shape, seed=6)
    _compare(impls.dau_gauss_conv2d, (x, w, mx, my, sigma, b), {"radius": 3, "stride": stride})


def test_one_element_sigma():
    """A ``[1]`` sigma gets its gradient in its own shape (the reference backend cannot take ``[1]`` here)."""
    args = list(_dau_args(-2.0, 2.0))
    for fn, kw in ((impls.dau_gauss_conv2d, {"radius": 3}), (impls.dau_conv2d, {})):
        scalar = _run(fn, args, kw, "numba", torch.float64)
        args[4] = args[4].reshape(1)
        one = _run(fn, args, kw, "numba", torch.float64)
        args[4] = args[4].reshape(())
        assert one[5].shape == (1,) and torch.equal(one[5].reshape(()), scalar[5])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("groups", [None, 1, 2, 4])
@pytest.mark.parametrize("stride", [1, 2])
def test_acu(stride, groups, dtype):
    shape = (K,) if groups is None else (groups, K)
    args = (
        _randn(N, S, H, W, seed=1),
        _randn(F, S, K, seed=2),
        _uniform(-6, 6, *shape, seed=3),
        _uniform(-6, 6, *shape, seed=4),
        _randn(F, seed=5),
    )
    _compare(impls.acu_conv2d, args, {"stride": stride}, dtype)


def test_acu_far_and_integer():
    px, py = torch.tensor([-20.0, 0.0, 1.0, 2.5]), torch.tensor([21.5, 0.0, -1.0, 0.25])
    args = (_randn(N, S, 5, 5, seed=1), _randn(F, S, 4, seed=2), px.double(), py.double(), None)
    _compare(impls.acu_conv2d, args, {"stride": 1})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("order", [0, 1, 2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_njet(stride, order, dtype):
    j_ = (order + 1) * (order + 2) // 2
    args = (
        _randn(N, S, H, W, seed=1),
        _randn(F, S, j_, seed=2),
        torch.tensor(1.3, dtype=torch.float64),
        _randn(F, seed=5),
    )
    _compare(impls.njet_conv2d, args, {"order": order, "stride": stride}, dtype)
    _compare(impls.njet_conv2d, args, {"order": order, "stride": stride, "radius": 9}, dtype)  # radius > image


def test_small_and_strided_inputs(dau_path):
    x = _randn(N, S, 1, 1, seed=1)
    _compare(impls.dau_conv2d, (x, *_dau_args()[1:]), {"stride": 2})
    _compare(
        impls.njet_conv2d, (x, _randn(F, S, 3, seed=2), torch.tensor(0.8, dtype=torch.float64), None), {"order": 1}
    )
    pos = _uniform(-1.5, 1.5, K, seed=3)
    _compare(impls.acu_conv2d, (x, _randn(F, S, K, seed=2), pos, pos.flip(0), None), {"stride": 3})
    _compare(impls.dau_gauss_conv2d, (x, *_dau_args(-1.0, 1.0)[1:]), {"radius": 2})
    xt = _randn(N, W, H, S, seed=1).permute(0, 3, 2, 1)  # non-contiguous [N,S,H,W]
    _compare(impls.dau_conv2d, (xt, *_dau_args()[1:]), {"stride": 1, "mu_grad": "gauss"})
    pos = _uniform(-3, 3, K, seed=3)
    _compare(impls.acu_conv2d, (xt, _randn(F, S, K, seed=2), pos, -pos, None), {"stride": 2})


def test_empty_batch():
    x = torch.zeros(0, S, H, W, dtype=torch.float64)
    w, mu, sig = _randn(F, S, K), _uniform(-2, 2, F, S, K), torch.tensor(1.0, dtype=torch.float64)
    cases = [
        (impls.dau_conv2d, (x, w, mu, mu, sig, _randn(F)), {"mu_grad": "gauss"}),
        (impls.dau_gauss_conv2d, (x, w, mu, mu, sig, None), {"radius": 2}),
        (impls.acu_conv2d, (x, w, mu[0, 0], mu[1, 0], None), {"stride": 2}),
        (impls.njet_conv2d, (x, _randn(F, S, 3), sig, None), {"order": 1}),
    ]
    for fn, args, kw in cases:
        ts = [None if a is None else a.clone().requires_grad_(True) for a in args]
        y = fn(*ts, **kw, backend="numba")
        assert y.shape == (0, F, *y.shape[2:])
        leaves = [a for a in ts if a is not None]
        for g, a in zip(torch.autograd.grad(y.sum(), leaves), leaves):
            assert g.shape == a.shape and not g.any()


def _all_layers(dtype):
    x = _randn(4, 8, 12, 11, seed=1)
    w, mu = _randn(16, 8, 2, seed=2), _uniform(-4, 4, 16, 8, 2, seed=3)
    sig = torch.tensor(0.6, dtype=torch.float64)
    out = []
    for mg in ("exact", "gauss"):
        out += _run(impls.dau_conv2d, (x, w, mu, -mu, sig, None), {"mu_grad": mg}, "numba", dtype)
    out += _run(impls.dau_gauss_conv2d, (x, w, mu / 2, mu / 3, sig, None), {"radius": 2}, "numba", dtype)
    out += _run(impls.acu_conv2d, (x, w, mu[:2, 0], mu[:2, 1], None), {"stride": 2}, "numba", dtype)
    out += _run(impls.njet_conv2d, (x, _randn(16, 8, 6), sig, None), {"order": 2}, "numba", dtype)
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deterministic(dtype, dau_path):
    first, second = _all_layers(dtype), _all_layers(dtype)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_inputs_untouched():
    args = _dau_args()
    before = [a.clone() for a in args]
    _run(impls.dau_conv2d, args, {"stride": 2}, "numba", torch.float64)
    assert all(torch.equal(a, b) for a, b in zip(args, before))


_GROUPS_PEAK = """
import resource, sys, torch, impls
def run(groups):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 32, 32, generator=g, requires_grad=True)
    w = torch.randn(64, 64, 9, generator=g, requires_grad=True)
    px, py = (torch.rand(groups, 9, generator=g).mul(3).sub(1.5).requires_grad_() for _ in range(2))
    y = impls.acu_conv2d(x, w, px, py, backend="numba")
    torch.autograd.grad(y, [x, w, px, py], torch.ones_like(y))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run(1)
base = run(1)
print((run(64) - base) / 1024)
"""


def test_acu_memory_does_not_grow_with_position_groups():
    """64 position groups need no more memory than one (issue 19 item 7): the shifted maps of all
    groups, ``[N, P, S, K, Ho, Wo]`` = 302 MB here, are never held at once.  Measured as the growth
    of the peak RSS of a fresh process from one group to 64 (parameters: a few kB)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _GROUPS_PEAK], capture_output=True, text=True, check=True)
    grow_mb = float(out.stdout.split()[-1])
    assert grow_mb < 40, f"peak RSS grew by {grow_mb:.0f} MB from 1 to 64 position groups"


_THREADS_RUN = """
import os, sys
os.environ["NUMBA_NUM_THREADS"] = sys.argv[1]
import torch, impls
torch.set_num_threads(int(sys.argv[1]))
g = torch.Generator().manual_seed(0)
x = torch.randn(4, 16, 20, 19, generator=g)
out = []
def run(fn, args, kw):
    ts = [a.clone().requires_grad_() for a in args]
    y = fn(*ts, **kw, backend="numba")
    out.extend([y.detach(), *torch.autograd.grad(y, ts, torch.randn(y.shape, generator=g))])
w, mu = torch.randn(24, 16, 2, generator=g), torch.rand(24, 16, 2, generator=g) * 6 - 3
run(impls.dau_conv2d, (x, w, mu, -mu, torch.tensor(0.7)), {})
run(impls.dau_conv2d, (x, w, mu, -mu, torch.tensor(0.7)), {"mu_grad": "gauss", "stride": 2})
pos = torch.rand(2, 3, 9, generator=g) * 3 - 1.5
run(impls.acu_conv2d, (x, torch.randn(24, 16, 9, generator=g), pos[0], pos[1]), {})
run(impls.njet_conv2d, (x, torch.randn(24, 16, 6, generator=g), torch.tensor(1.2)), {"order": 2})
torch.save(out, sys.argv[2])
"""


def test_same_bits_at_one_and_two_threads(tmp_path):
    """Fixed-order reductions: every output and gradient is bit-identical at 1 and 2 threads."""
    import subprocess
    import sys

    res = []
    for n in (1, 2):
        path = tmp_path / f"t{n}.pt"
        subprocess.run([sys.executable, "-c", _THREADS_RUN, str(n), str(path)], check=True)
        res.append(torch.load(path))
    assert len(res[0]) == len(res[1]) == 21
    for i, (a, b) in enumerate(zip(*res)):
        assert torch.equal(a, b), i


_ENV_PROBE = """
import json, os, sys
if sys.argv[1] != "impls-first":  # numba imported first (as harness.timing does) ...
    import numba
    if sys.argv[1] == "numba-first":  # ... and someone else's @njit starts its CPU target
        numba.njit(lambda v: v + 1)
from impls import _numba_env, numba_cpu
from numba.core.registry import cpu_target
print(json.dumps({**numba_cpu._VEC, "env_slp": os.environ.get("NUMBA_SLP_VECTORIZE"),
                  "env_features": os.environ.get("NUMBA_CPU_FEATURES"),
                  "real_bits": _numba_env.vector_bits(cpu_target.target_context.codegen()._tm_features)}))
"""


def _probe(mode, **env):
    import json
    import os
    import subprocess
    import sys

    keep = {k: v for k, v in os.environ.items() if k not in ("NUMBA_SLP_VECTORIZE", "NUMBA_CPU_FEATURES")}
    out = subprocess.run(
        [sys.executable, "-c", _ENV_PROBE, mode], capture_output=True, text=True, check=True, env={**keep, **env}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_wide_vector_settings_and_their_fallback():
    """``impls._numba_env``: imported first, the backend turns SLP on and, on AVX-512, drops LLVM's
    256-bit preference; the user's own settings stand; when numba's CPU target was started before
    it, the features cannot change and the state says why (the run goes on at numba's width)."""
    for mode in ("impls-first", "numba-imported"):  # imported, not started: its settings read again
        first = _probe(mode)
        assert first["numba_slp"] and first["env_slp"] == "1" and first["fallback"] is None
        assert first["numba_vector_bits"] == first["real_bits"]
        if first["cpu_isa"] == "avx512":
            assert first["numba_vector_bits"] == 512 and first["env_features"].endswith(",-prefer-256-bit")
        else:
            assert first["env_features"] is None
    user = _probe("impls-first", NUMBA_SLP_VECTORIZE="0", NUMBA_CPU_FEATURES="")
    assert not user["numba_slp"] and user["slp_source"] == "user" and user["numba_cpu_features"] == "user"
    assert user["numba_vector_bits"] == (256 if user["cpu_isa"] in ("avx512", "avx2", "avx") else 128)
    late = _probe("numba-first")
    assert late["numba_slp"]  # read again at every compilation: still applies
    assert late["numba_vector_bits"] == late["real_bits"]
    if late["cpu_isa"] == "avx512":
        assert late["numba_vector_bits"] == 256 and "started before" in late["fallback"]
