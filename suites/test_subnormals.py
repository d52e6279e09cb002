"""Subnormals in the timing (``rfbench bench --ftz``): every speed row records flush-to-zero and
denormals-are-zero as the timing thread had them; with ``--ftz on`` every backend and peer is
timed flushed and again unflushed, and a slowdown above ``bench.STALL`` is flagged as a stall (not
shown as a speed).  Tiny cases; no figure is checked."""

import json

import pytest
import torch

from rfbench.harness import bench, cases, env, timing


@pytest.fixture(autouse=True)
def no_probe(monkeypatch):
    monkeypatch.setattr(timing, "peaks", lambda device, ariths=("float32",), threads=None: None)


def _sweep(tmp_path, **kw):
    grid = [cases.Case("tiny", "acu", n=1, s=2, f=2, h=6, w=6, k=3, seed=1)]
    return bench.sweep(grid, ["torch-naive", "torch-fast"], "cpu", "float32", str(tmp_path), reps=3, budget_s=1, **kw)


def test_flush_denormal_sets_and_restores_the_thread_mode():
    before = env.subnormal_modes()
    with timing.flush_denormal(True):
        assert env.subnormal_modes() == {"ftz": True, "daz": True}
        assert float((torch.tensor(2.0**-127, dtype=torch.float32) * 0.5).item()) == 0.0
    assert env.subnormal_modes() == before


def test_rows_record_the_mode_and_both_timings_under_ftz_on(tmp_path, one_thread):
    rows = _sweep(tmp_path, threads=1, ftz=True).rows
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["ftz"] and r["daz"] and r["key"]["ftz"] for r in ok)
    for r in ok:
        assert r["unflushed_median_s"] > 0 and r["subnormal_slowdown"] == r["unflushed_median_s"] / r["median_s"]
        assert r["origin"] == "ours"


def test_ftz_is_in_the_group_key_and_old_rows_count_as_off(tmp_path, one_thread):
    _sweep(tmp_path, threads=1)
    assert _sweep(tmp_path, threads=1, ftz=True).why == {"measured again: other ftz": 3}
    path = tmp_path / bench.RESULTS
    _sweep(tmp_path, threads=1)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in (r for r in rows if "key" in r):  # schema 2: the first line is the run's environment
        del r["key"]["ftz"]  # rows from before the key had it: timed with the CPU's default (off)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _sweep(tmp_path, threads=1).reused == 3


def test_a_stall_is_flagged():
    row = {"status": "ok", "roofline_fraction": None, "noisy": False, "load": {"contended": False}}
    assert bench.flags({**row, "subnormal_slowdown": 1.9}) == []
    assert bench.flags({**row, "subnormal_slowdown": 18.0}) == ["subnormal stall: 18.0x slower with flush-to-zero off"]
