"""DistributedDataParallel with the gloo backend, 2 processes on localhost (``suites/ddp_probe.py``): a float64
model of the four modules trained for a few steps on every CPU backend, ACU's position normalisation
(``rfbench.nn.normalize_position_grads``) included."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from rfbench import impls

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 3
TIMEOUT = 150  # seconds for the whole probe; about 25 s measured on a loaded 2-core machine
# One process on the concatenated batch against DDP: the same float64 sums in another order. The rigorous
# check is the bit-for-bit one against the process that accumulates the halves; this one is the gauge of
# test_torch_integration.py (RTOL there: float64 sums reordered agree to about eps64 * 1e3 relative to the
# gradient's size when they do not cancel), measured at most 5.4e-14 here, every backend.
RTOL = 1e-11


def cpu_float64_backends():
    cpu, f64 = torch.device("cpu"), torch.float64
    return [
        b
        for b in impls.available_backends()
        if not any(impls.BACKENDS[b].refusal(layer, cpu, f64) for layer in ("dau", "dau_gauss", "acu", "njet"))
    ]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("this torch build has no torch.distributed with the gloo backend")
    out = tmp_path_factory.mktemp("ddp") / "result.json"
    backends = cpu_float64_backends()
    cmd = [sys.executable, os.path.join(HERE, "ddp_probe.py"), "--out", str(out), "--steps", str(STEPS)]
    cmd += ["--timeout", str(TIMEOUT), "--backends", *backends]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT + 30)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads(out.read_text())
    assert sorted(res) == sorted(backends)
    return res


@pytest.mark.parametrize("backend", cpu_float64_backends())
def test_ddp_gradients_equal_on_both_ranks_and_to_one_process(probe, backend):
    """Every step: both ranks hold the same gradients bit for bit; they equal bit for bit one process that
    backpropagates the two halves one after the other and halves the sum (the same numbers, the probe's
    docstring shows why, so the same trajectory); and one process on the concatenated batch, from the
    same parameters, to rounding: the same sums in another order (``RTOL`` of test_torch_integration: a
    few thousand float64 terms per element), compared with each parameter's largest gradient."""
    steps = probe[backend]
    assert len(steps) == STEPS
    for k, s in enumerate(steps):
        assert s["ranks_equal"], f"step {k}: the ranks' gradients differ"
        assert s["accumulated_equal"], f"step {k}: DDP differs from one process accumulating the halves"
        for name, (diff, top) in s["concatenated"].items():
            assert diff <= RTOL * top, f"step {k} {name}: max |DDP - one process| {diff:.3g}, max |grad| {top:.3g}"
    acu = [v for n, v in steps[0]["concatenated"].items() if n.endswith("pos_x")]
    assert acu and 0.5 < acu[0][1] <= 1 + 1e-15  # normalised: every moving synapse's (gx, gy) has norm 1
