"""Property-based fuzzing: every layer on every CPU backend against the float64 reference,
forward and every gradient, judged by the tolerance of ``harness.metrics`` (a derived bound,
reference/README.md section 1).

Ranges: N 0-3, channels 1-7, H and W 1-17, K 1-4, stride 1-3, displacements up to +-20
(random, exact integers, integers +- 1e-7, or a mixture), sigma 0.3-5 (per-unit for
``dau_gauss``), ACU position groups, channel groups (``groups`` 1-3 and depthwise) of the other
layers, N-Jet orders 0-4, both ``mu_grad`` modes, data scaled by
1e-20 or 1e15 in one case of five, float32 and float64.

Profiles:
- default run: a short deterministic profile (``RFBENCH_FUZZ_EXAMPLES`` examples per layer
  and backend, default 6, derandomised: the same cases every run).
- ``-m slow``: ``test_fuzz_long`` fuzzes with fresh randomness for ``RFBENCH_FUZZ_SECONDS``
  (default 600) per layer and backend, e.g. a 10-minute run per backend over all layers:
  ``RFBENCH_FUZZ_SECONDS=150 PYTHONPATH=$PWD python -m pytest -q -s -m slow suites/test_fuzz.py -k numba``
  It prints the number of configurations and the median and worst err/bound.

Every failure prints the case and a command that replays it:
``PYTHONPATH=$PWD python suites/test_fuzz.py '<json>'``.
"""

import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from rfbench.harness import cases, runner

BACKENDS = ["torch-naive", "torch-fast", "numba"]
LAYERS = ["dau", "dau_gauss", "acu", "njet"]
DTYPES = ["float32", "float64"]


@dataclass(frozen=True)
class FuzzCase(cases.Case):
    """A ``Case`` with the displacement patterns of the fuzz suite.

    ``displace``: ``"random"``, ``"integer"``, ``"near-integer"`` (integers +- 1e-7: below an
    integer the float32 bilinear weight ``1 - frac`` used to cancel) or ``"mixed"`` (each
    displacement independently one of the three).
    """

    def _displacements(self, rng, shape):
        d = rng.uniform(-self.spread, self.spread, shape) + self.offset
        near = np.round(d) + rng.choice([-1e-7, 1e-7], shape)
        pick = {"random": 0, "integer": 1, "near-integer": 2}.get(self.displace)
        which = rng.integers(0, 3, shape) if pick is None else np.full(shape, pick)
        return np.choose(which, [d, np.round(d), near])


@st.composite
def fuzz_cases(draw, layer):
    """A random ``FuzzCase`` of ``layer`` in the ranges of the module docstring."""
    c = {
        "name": "fuzz",
        "layer": layer,
        "n": draw(st.integers(0, 3)),
        "s": draw(st.integers(1, 7)),
        "h": draw(st.integers(1, 17)),
        "w": draw(st.integers(1, 17)),
        "stride": draw(st.integers(1, 3)),
        "sigma": draw(st.floats(0.3, 5.0)),
        "bias": draw(st.booleans()),
        "contiguous": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
        # data scaled into float32's subnormal range and near its top (Case.scale)
        "scale": draw(st.sampled_from([1.0, 1.0, 1.0, 1e-20, 1e15])),
    }
    if layer == "acu":
        groups = draw(st.sampled_from([0, 1, 2, 3]))
        c["f"] = max(1, groups) * draw(st.integers(1, max(1, 7 // max(1, groups))))
        c["groups"] = groups
    else:  # channel groups: 1, 2, 3 or depthwise (groups = S = F)
        cg = draw(st.sampled_from([1, 1, 2, 3, "depthwise"]))
        if cg == "depthwise":
            c["f"] = cg = c["s"]
        else:
            c["s"] = cg * draw(st.integers(1, max(1, 7 // cg)))
            c["f"] = cg * draw(st.integers(1, max(1, 7 // cg)))
        c["channel_groups"] = cg
    if layer != "njet":
        c["k"] = draw(st.integers(1, 4))
        c["spread"] = draw(st.sampled_from([0.5, 2.0, 5.0, 12.0, 20.0]))
        c["offset"] = draw(st.sampled_from([0.0, 0.0, -6.0, 8.0]))
        if abs(c["offset"]) + c["spread"] > 20:
            c["offset"] = 0.0
        c["displace"] = draw(st.sampled_from(["random", "integer", "near-integer", "mixed"]))
    if layer == "dau":
        c["mu_grad"] = draw(st.sampled_from(["exact", "gauss"]))
        c["radius"] = draw(st.sampled_from([None, None, 0, 1, 4]))
    elif layer == "dau_gauss":
        c["per_unit_sigma"] = draw(st.booleans())
        c["radius"] = draw(st.integers(0, 6))
    elif layer == "njet":
        c["order"] = draw(st.integers(0, 4))
        c["radius"] = draw(st.sampled_from([None, None, 0, 2]))
    return FuzzCase(**c)


RATIOS = {}  # (layer, backend) -> err/bound of every output checked, for the summary


def replay_command(case, backend, dtype, seed_):
    spec = json.dumps({"case": asdict(case), "backend": backend, "dtype": dtype, "seed": seed_})
    return f"PYTHONPATH=$PWD python suites/test_fuzz.py '{spec}'"


def check(case, backend, dtype, seed_=0):
    """Run ``case`` through ``backend`` vs the reference; fail with a replayable message."""
    rows = runner.run_case(case, backend, dtype, "cpu", seed_)
    bad = [r for r in rows if r["status"] not in ("pass", "skip")]
    RATIOS.setdefault((case.layer, backend), []).extend(r["bound_ratio"] for r in rows if r["bound_ratio"] is not None)
    if bad:
        lines = [
            f"{r['output']}: {r['status']} rel_err={r['rel_err']} err/bound={r['bound_ratio']} "
            f"{(r['reason'] or '').splitlines()[0] if r['reason'] else ''}"
            for r in bad
        ]
        replay = replay_command(case, backend, dtype, seed_)
        pytest.fail(f"{backend} {dtype} {case}\n" + "\n".join(lines) + f"\nreplay: {replay}")


def _short_examples():
    return int(os.environ.get("RFBENCH_FUZZ_EXAMPLES", "6"))


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz(backend, layer, one_thread):
    """The short deterministic profile (the same examples every run, all backends the same cases)."""

    @settings(
        max_examples=_short_examples(),
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=fuzz_cases(layer), dtype=st.sampled_from(DTYPES))
    def run(case, dtype):
        check(case, backend, dtype)

    run()


@pytest.mark.slow
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_long(backend, layer, one_thread):
    """Fresh random cases for ``RFBENCH_FUZZ_SECONDS`` seconds; prints count, median and worst err/bound."""
    budget = float(os.environ.get("RFBENCH_FUZZ_SECONDS", "600"))
    base = int(os.environ.get("RFBENCH_SEED", time.time_ns() % 2**31))
    end = time.time() + budget
    count = [0]

    @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=fuzz_cases(layer), dtype=st.sampled_from(DTYPES))
    def run(case, dtype):
        if time.time() < end:
            check(case, backend, dtype, base)
            count[0] += 1

    batch = 0
    while time.time() < end:
        seed(base + batch)(run)()
        batch += 1
    r = np.array(RATIOS.get((layer, backend), [0.0]))
    print(
        f"\nfuzz {layer} {backend}: {count[0]} configurations (seed base {base}), {len(r)} outputs, "
        f"err/bound median {np.median(r):.3g}, worst {r.max():.3g}"
    )


def test_fuzz_cases_cover_the_ranges():
    """The strategy reaches the edges the suite promises (a guard against a silently narrowed range)."""
    seen = {"n0": False, "pixel": False, "near": False, "order4": False, "groups": False, "per_unit": False}
    seen.update(channel_groups=False, depthwise=False)

    @settings(max_examples=150, derandomize=True, deadline=None, database=None)
    @given(data=st.data())
    def run(layer, data):
        c = data.draw(fuzz_cases(layer))
        seen["n0"] |= c.n == 0
        seen["pixel"] |= c.h == 1 or c.w == 1
        seen["order4"] |= c.order == 4 and layer == "njet"
        seen["groups"] |= c.groups > 1
        seen["per_unit"] |= c.per_unit_sigma
        seen["channel_groups"] |= 1 < c.channel_groups < c.s
        seen["depthwise"] |= c.channel_groups == c.s == c.f > 1
        if c.layer != "njet" and c.displace == "near-integer":
            mu = c.arrays()["mu_x" if layer != "acu" else "pos_x"]
            frac = np.abs(mu - np.round(mu))
            seen["near"] |= bool(np.all((frac > 0) & (frac < 2e-7)))

    for layer in LAYERS:
        run(layer)
    assert all(seen.values()), seen


def main(spec):
    """Replay one case: ``spec`` is the JSON printed by a failure."""
    d = json.loads(spec)
    case = FuzzCase(**d["case"])
    rows = runner.run_case(case, d["backend"], d["dtype"], "cpu", d.get("seed", 0))
    for r in rows:
        print(r["output"], r["status"], f"rel_err={r['rel_err']} err/bound={r['bound_ratio']}", r["reason"] or "")
    return 0 if all(r["status"] in ("pass", "skip") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
