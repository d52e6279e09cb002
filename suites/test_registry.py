"""The backend registry: capabilities, refusals that name backend and reason, "auto"."""

import pytest
import torch

from rfbench import impls
from rfbench.impls import _registry


def test_every_backend_has_a_complete_record():
    for row in impls.backend_table():
        assert row["layers"] and row["devices"] and row["dtypes"] and row["passes"], row
        assert row["unavailable"] is None or isinstance(row["unavailable"], str)


def test_reference_is_registered_and_available():
    assert "reference" in impls.available_backends()
    assert impls.BACKENDS["reference"].dtypes == ("float64",)


def test_refusal_names_backend_and_reason():
    x = torch.zeros(1, 2, 4, 4, dtype=torch.float32)
    w = torch.zeros(3, 2, 5)
    p = torch.zeros(5)
    with pytest.raises(impls.BackendUnavailable, match="backend 'reference'.*float32"):
        impls.acu_conv2d(x, w, p, p, backend="reference")


def test_unavailable_backends_say_why():
    for row in impls.backend_table():
        if row["unavailable"]:
            b = impls.BACKENDS[row["backend"]]
            with pytest.raises(impls.BackendUnavailable, match=row["backend"]):
                _registry.select(
                    row["backend"],
                    "acu",
                    torch.zeros(1, 1, 2, 2, device=b.devices[0] if b.devices[0] == "cpu" else "cpu"),
                )


def test_auto_picks_the_first_capable_backend_in_order():
    x64 = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    name, _ = _registry.select("auto", "njet", x64)
    capable = [
        n
        for n in _registry.auto_order("njet", x64.device)
        if n in impls.BACKENDS and impls.BACKENDS[n].refusal("njet", x64.device, x64.dtype) is None
    ]
    assert name == capable[0]


def test_auto_refuses_when_nothing_can_run():
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float16)  # no CPU backend runs float16
    with pytest.raises(impls.BackendUnavailable, match="no backend runs acu"):
        _registry.select("auto", "acu", x)


def test_results_and_the_report_record_the_backends_declared_packages(monkeypatch):
    """What a backend declares (``packages``) is what every result's environment records and what the
    report's environment table shows: a new backend's library needs no list of the harness edited."""
    import pandas as pd

    from rfbench.harness import env, report

    fake = _registry.Backend("fake", ".backends.fake", ("cpu",), ("float32",), packages=(("fakelib", "no-such-dist"),))
    monkeypatch.setitem(_registry.BACKENDS, "fake", fake)
    env._environment.cache_clear()
    try:
        e = env.environment()
    finally:
        env._environment.cache_clear()
    assert {"torch", "numpy", "scipy", "numba", "numba-cuda", "cupy", "fakelib"} <= set(e) and e["fakelib"] is None
    table = report.environment_table(pd.DataFrame({"machine": ["m"], "env": [e]}))
    assert "fakelib" in table.columns and "cupy" in table.columns
