"""Backend ``numba``: what is specific to its paths, judged like the matrix (``harness.runner``: the
float64 reference and the derived rounding bound of reference/README.md section 9).

Its ``dau`` has two code paths, the wide-row kernels (stride 1, moderate displacement spreads) and
the per-row kernels: every dau case of the smoke grid, and the cases below that stress the
padding of the wide window, runs on both.  Its ``acu`` chunks the synapses to a budget.  Then
what no tolerance judges: the wide-window choice, bit-identical reruns and thread counts, memory
that does not grow with position groups, a one-element ``sigma``.  Every other case is the
correctness matrix's (``suites/test_matrix.py``)."""

import numpy as np
import pytest
import torch

from rfbench import impls
from rfbench.harness import cases, runner

pytest.importorskip("numba")
from rfbench.impls.backends.numba import kernels as numba_kernels  # noqa: E402
from rfbench.impls.backends.numba import layers as numba_layers  # noqa: E402


def _judge(case, dtype, seed):
    rows = runner.run_case(case, "numba", dtype, "cpu", seed)
    bad = [
        f"{r['output']}: {r['status']} err/bound={r['bound_ratio']} {r['reason']}"
        for r in rows
        if r["status"] != "pass"
    ]
    assert not bad, f"{case.id} {dtype} (seed {seed}, case {case.fields()}):\n" + "\n".join(bad)


@pytest.fixture(params=["wide", "rows"])
def dau_path(request, monkeypatch):
    """Both DAU code paths on the same cases: the register-blocked window kernels (any column
    spread) or the per-row ones."""
    monkeypatch.setattr(numba_layers, "_WASTE", float("inf") if request.param == "wide" else 0.0)
    return request.param


def _beyond(lo, hi, blur_radius, h, w):
    """Every unit displaced by ``lo..hi``, past the blur's reach on a narrow image: the wide path's padded
    ``dy`` of the input gradient is narrower than ``dy`` itself (the fuzz suite found a broadcast error)."""
    name = f"beyond-reach{lo:g}..{hi:g}-r{blur_radius}-{h}x{w}"
    return cases.Case(name, "dau", h=h, w=w, k=3, spread=(hi - lo) / 2, offset=(hi + lo) / 2, radius=blur_radius)


DAU = [c for c in cases.grid("smoke") if c.layer == "dau"]
DAU += [_beyond(lo, hi, r, h, 3) for lo, hi in ((2.2, 2.8), (-3.8, -3.2), (-2.8, 4.6)) for r in (0, 1) for h in (1, 4)]
DAU += [
    cases.Case("far-integer", "dau", h=5, w=5, k=3, spread=2.0, offset=20.0, radius=3, displace="integer"),
    cases.Case("far-gauss", "dau", h=5, w=5, k=3, spread=2.0, offset=-20.0, radius=3, mu_grad="gauss"),
    cases.Case("radius0-stride3", "dau", k=3, spread=1.5, sigma=0.4, radius=0, stride=3, bias=False),
    cases.Case("radius-beyond-image", "dau", k=2, radius=12, sigma=0.9),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", DAU, ids=[c.id for c in DAU])
def test_dau_on_both_paths(case, dtype, dau_path, seed):
    _judge(case, dtype, seed)


def test_dau_takes_the_wide_path_at_paper_spreads():
    """Units displaced by up to 4 px on a 32 x 32 image run the register-blocked window kernels."""
    fy = torch.arange(-4, 4).repeat(4).reshape(4, 4, 2).numpy()
    assert numba_layers._wide_window(fy, fy[::-1].copy(), 32, 32, 32, 32, 2, 1) is not None
    assert numba_layers._wide_window(fy, fy, 32, 32, 32, 32, 2, 2) is None
    assert numba_layers._wide_window(fy * 3, fy, 32, 32, 32, 32, 2, 1) is not None
    assert numba_layers._wide_window(fy, fy * 3, 32, 32, 32, 32, 2, 1) is None


RADIUS = [
    cases.Case(f"radius9-order{o}-s{st}", "njet", radius=9, order=o, sigma=1.3, stride=st, seed=o)
    for o in (1, 3)
    for st in (1, 2)
] + [cases.Case("radius9", "dau_gauss", k=3, radius=9, sigma=1.1, spread=2.0)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", RADIUS, ids=[c.id for c in RADIUS])
def test_radius_beyond_the_image(case, dtype, seed):
    """The taps beyond the image are dropped (``keep``): orders and strides the smoke grid lacks."""
    _judge(case, dtype, seed)


def test_acu_chunks(monkeypatch, seed):
    """A budget of one element: one synapse per chunk of shifted maps."""
    monkeypatch.setattr(numba_layers, "_BUDGET", 1)
    for case in (c for c in cases.grid("smoke") if c.layer == "acu" and c.n):
        _judge(case, "float64", seed)
    _judge(cases.Case("groups-stride2", "acu", k=4, f=6, groups=3, stride=2), "float32", seed)


def _randn(*shape, seed=0):
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _uniform(lo, hi, *shape, seed=0):
    return lo + (hi - lo) * torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _run(fn, args, kw, backend, dtype):
    """Output and gradients of every tensor argument for a fixed random ``dy``. -> list of tensors"""
    ts = [None if a is None else a.to(dtype).requires_grad_(True) for a in args]
    y = fn(*ts, **kw, backend=backend)
    dy = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(99)).to(dtype)
    leaves = [a for a in ts if a is not None]
    return [y.detach(), *torch.autograd.grad(y, leaves, dy)] if y.numel() else [y.detach()]


@pytest.mark.parametrize("hw", [(9, 17), (19, 33), (2, 40), (17, 16)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mu_grad", ["exact", "gauss"])
def test_dau_register_blocks(hw, dtype, mu_grad, monkeypatch, seed):
    """The register-blocked kernels (``_rb_shift``, ``_rb_taps``) where no block is filled exactly:
    rows not a multiple of ``_RB``, columns not a multiple of ``_CW`` (a tail of lanes in the tap
    sums, and a whole block of it at width 2 and 17), more channels than one group or task
    (``channel_block`` <= 12, ``_TF`` = 32, ``_TS`` = 8), and three units per pair (groups of four units cut short).
    Judged by the derived bound of reference/README.md section 9 (FMA contraction included)."""
    monkeypatch.setattr(numba_layers, "_WASTE", float("inf"))
    case = cases.Case("rb", "dau", n=2, s=17, f=33, k=3, h=hw[0], w=hw[1], sigma=0.6, spread=4.5, mu_grad=mu_grad)
    _judge(case, dtype, seed)


_GRIDS = [(4, 7, 20, (1, 2)), (2, 9, 33, (2, 1)), (8, 7, 5, (2, 4)), (8, 5, 6, (8, 1))]


@pytest.mark.parametrize("n, h, w, grid", _GRIDS)
def test_dau_image_grid(n, h, w, grid, monkeypatch):
    """The input gradient's gather over images laid out as a grid (``_image_grid``: ``mr`` down, ``mc``
    across, at the smallest pitches it allows) gives what it gives one image at a time, bit for bit:
    each output sums the same terms in the same order, and no read of one image's outputs reaches a
    neighbour's ``dy``, even at the widest spread."""
    monkeypatch.setattr(numba_layers, "_WASTE", float("inf"))
    args = [
        _randn(n, 5, h, w, seed=1),
        _randn(6, 5, 2, seed=2),
        _uniform(-4.5, 4.5, 6, 5, 2, seed=3),
        _uniform(-4.5, 4.5, 6, 5, 2, seed=4),
        torch.tensor(0.6).double(),
        None,
    ]
    used = []

    def layout(mr, mc):
        def pick(n_, hb, wb, gaps, threads):
            used.append((mr, mc))
            return mr, mc, max(hb, gaps[0]), max(wb, gaps[1])

        return pick

    monkeypatch.setattr(numba_layers, "_image_grid", layout(*grid))
    together = _run(impls.dau_conv2d, args, {}, "numba", torch.float32)
    assert used == [grid]
    monkeypatch.setattr(numba_layers, "_image_grid", layout(1, 1))
    alone = _run(impls.dau_conv2d, args, {}, "numba", torch.float32)
    for name, a, b in zip(("y", "x", "weight", "mu_x", "mu_y", "sigma"), together, alone):
        assert torch.equal(a, b), f"{name}: laid out {grid} != one image at a time"


def test_image_grid_choice(monkeypatch):
    """``_image_grid`` on the paper case's input gradient (8 images, a 36 x 36 support, 38 apart), with
    the AVX-512 blocks (8 x 16): one group of 8 (11.9 blocks per image at one thread, against 15 alone
    and 12.5 two across); the busiest thread decides at two threads (one group's 5 row blocks, 8
    images across, would leave one thread 3 of them: 7.1 per image), where two across ties with
    2 x 4 (6.25) and the tie goes to fewer images."""
    monkeypatch.setattr(numba_layers, "_RB", 8)
    monkeypatch.setattr(numba_layers, "_CW", 16)
    assert numba_layers._image_grid(8, 36, 36, (38, 38), 1) == (1, 8, 38, 38)
    assert numba_layers._image_grid(8, 36, 36, (38, 38), 2) == (1, 2, 38, 38)
    assert numba_layers._image_grid(1, 36, 36, (38, 38), 1) == (1, 1, 38, 38)
    assert numba_layers._image_grid(3, 16, 16, (20, 10), 1)[:2] == (1, 1)  # 16 x 16: whole blocks alone


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
    got = numba_kernels._rb_taps(c, d, *numba_kernels.unit_lists(off, hc * pw), k_, 1)
    want = np.zeros((f_, s_, k_, 4))
    for f, s, k in zip(*np.nonzero(off >= 0)):
        r0, q0 = divmod(off[f, s, k], pw)
        for m in range(4):
            da, db = divmod(m, 2)
            want[f, s, k, m] = (d[:, f] * c[:, s, r0 + da : r0 + da + ho, q0 + db : q0 + db + wo]).sum()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_one_element_sigma():
    """A ``[1]`` sigma gets its gradient in its own shape (the reference backend cannot take ``[1]`` here)."""
    x, w = _randn(2, 3, 7, 6, seed=1), _randn(4, 3, 3, seed=2)
    args = [x, w, _uniform(-2, 2, 4, 3, 3, seed=3), _uniform(-2, 2, 4, 3, 3, seed=4), torch.tensor(0.7).double(), None]
    for fn, kw in ((impls.dau_gauss_conv2d, {"radius": 3}), (impls.dau_conv2d, {})):
        scalar = _run(fn, args, kw, "numba", torch.float64)
        args[4] = args[4].reshape(1)
        one = _run(fn, args, kw, "numba", torch.float64)
        args[4] = args[4].reshape(())
        assert one[5].shape == (1,) and torch.equal(one[5].reshape(()), scalar[5])


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


_GROUPS_PEAK = """
import resource, sys, torch
from rfbench import impls
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
import torch
from rfbench import impls
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
from rfbench.impls.backends.numba import target
from rfbench.impls.backends.numba import kernels
from numba.core.registry import cpu_target
print(json.dumps({**kernels._VEC, "env_slp": os.environ.get("NUMBA_SLP_VECTORIZE"),
                  "env_features": os.environ.get("NUMBA_CPU_FEATURES"),
                  "real_bits": target.vector_bits(cpu_target.target_context.codegen()._tm_features)}))
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
    """``impls/backends/numba/target.py``: imported first, the backend turns SLP on and, on AVX-512, drops LLVM's
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
