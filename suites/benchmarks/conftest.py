"""pytest-benchmark integration: the harness's thread environment (set before torch and numba
load; ``RFBENCH_THREADS`` threads, default all cores) and machine info extended with the GPU,
library versions and thread settings."""

import os

import pytest

from rfbench.harness.machine import apply_thread_env, cores

THREADS = int(os.environ.get("RFBENCH_THREADS", cores()))
apply_thread_env(THREADS)

from rfbench.harness.env import environment  # noqa: E402 - imports torch: after the thread environment


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["rfbench"] = {**environment(), "threads": THREADS}


@pytest.fixture(autouse=True)
def held_threads():
    """Every backend on ``THREADS`` threads, checked again after the timed test."""
    from rfbench.harness import timing

    timing.hold_threads(THREADS)
    yield
    timing.check_threads(THREADS)
