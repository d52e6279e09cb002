"""pytest-benchmark integration: machine info extended with the GPU and library versions."""

from harness.env import environment


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["rfbench"] = environment()
