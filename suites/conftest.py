"""Shared fixtures: the session seed (fresh random data each run, printed so a failure can be
replayed with RFBENCH_SEED=...), and the grid the correctness matrix expands."""

import os
import random
import shutil

import pytest

# Without a GPU, numba.cuda kernels run under Numba's CUDA simulator (suites/test_cuda.py).  It
# must be set before numba is first imported; it does not affect Numba's CPU targets.  The
# check is cheap on purpose (no torch.cuda).
if not (shutil.which("nvidia-smi") or os.path.exists("/dev/nvidia0")):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

# Set in the environment so that pytest-xdist workers (started after this file is read by the
# controller, inheriting its environment) draw the same data and collect the same tests.
SEED = int(os.environ.setdefault("RFBENCH_SEED", str(random.SystemRandom().randrange(2**31))))


def pytest_addoption(parser):
    parser.addoption(
        "--grid", default="smoke", help="case grid of the correctness matrix (smoke, default, paper, full)"
    )


def pytest_ignore_collect(collection_path, config):
    """The speed benchmarks run only when asked for by path (``pytest suites/benchmarks``)."""
    if collection_path.name == "benchmarks" and not any("benchmarks" in str(a) for a in config.args):
        return True
    return None


def pytest_report_header(config):
    return f"rfbench: seed {SEED} (replay with RFBENCH_SEED={SEED}), matrix grid {config.getoption('--grid')}"


@pytest.fixture
def one_thread():
    """Tiny ops: one torch thread is many times faster than two on a busy 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def seed():
    return SEED
