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


def pytest_terminal_summary(terminalreporter):
    """The seed again at the end, where ``-q`` (which hides the header) shows it too."""
    terminalreporter.write_line(f"rfbench: seed {SEED} (replay with RFBENCH_SEED={SEED})")


def pytest_report_header(config):
    return f"rfbench: seed {SEED} (replay with RFBENCH_SEED={SEED}), matrix grid {config.getoption('--grid')}"


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")


@pytest.fixture(autouse=True, scope="session")
def _numba_pool_at_full_size():
    """numba reads NUMBA_NUM_THREADS once, at import, as the most threads its pool can ever run.
    Imported here first, so that a test calling ``cli.main([... "--threads", "1"])`` in this
    process (which sets NUMBA_NUM_THREADS=1) cannot shrink it for every later test of the worker
    (a ThreadDrift "numba was started with NUMBA_NUM_THREADS=1" in later 2-thread tests)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        pass
    yield


@pytest.fixture(autouse=True)
def _restore_threads(_numba_pool_at_full_size):
    """A test that runs ``cli.main`` in this process (``--threads``: ``apply_thread_env`` and the
    timer's ``hold_threads``) leaves the thread variables and torch's and numba's thread counts as
    they were, so later tests in the same worker run as they would alone."""
    import sys

    env = {k: os.environ.get(k) for k in _THREAD_VARS}
    torch = sys.modules.get("torch")
    numba = sys.modules.get("numba")
    counts = (torch.get_num_threads() if torch else None, numba.get_num_threads() if numba else None)
    yield
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if torch is not None and torch.get_num_threads() != counts[0]:
        torch.set_num_threads(counts[0])
    if numba is not None and numba.get_num_threads() != counts[1]:
        numba.set_num_threads(counts[1])


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
