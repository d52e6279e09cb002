"""Time-left estimates from the cost model and the rate measured so far, budgets that bound a group
for real, and ``--time-limit`` for a whole run (issue 29, item 3)."""

import io
import os
import re
import subprocess
import sys
import time

from rfbench.harness import bench, cases, console, eta, timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_estimate_scales_each_group_left_by_its_predicted_cost():
    est = eta.Eta([1, 10, 100, 1000], budget_s=500)
    assert est.left() is None and est.bound() == 2000  # no rate yet: only the bound
    est.record(2.0)  # 2 s per unit of cost
    assert est.group(1) == 20 and est.group(2) == 200 and est.group(3) == 500  # the budget caps it
    assert est.left() == 720
    est.record(30.0)  # now (2 + 30) / 11 s per unit
    assert abs(est.left() - (min(100 * 32 / 11, 500) + 500)) < 1e-9


def test_a_group_left_is_never_estimated_below_the_shortest_group_seen():
    est = eta.Eta([1000, 1], budget_s=None)
    est.record(10.0)
    assert est.left() == 10.0  # the overhead of a group, not 0.01 s


def test_the_predicted_cost_orders_groups_as_their_work():
    small = cases.Case("t", "acu", n=1, s=1, f=1, h=4, w=4)
    big = cases.Case("t", "acu", n=2, s=8, f=8, h=32, w=32)
    backends = ["torch-naive", "torch-fast"]
    a = bench.predicted_cost(small, "forward", backends, "cpu", "float32")
    b = bench.predicted_cost(big, "forward", backends, "cpu", "float32")
    c = bench.predicted_cost(big, "forward+backward", backends, "cpu", "float32")
    assert 0 < a < b < c


def test_the_first_progress_line_is_the_bound_and_never_zero_time_left():
    out = io.StringIO()
    t = [0.0]
    progress = console.Progress("bench", stream=out, clock=lambda: t[0])
    progress.begin(3, 360.0)
    t[0] = 0.2
    progress(1, 3, None, 0.1)  # a tiny estimate is not "0:00 left"
    t[0] = 65.0
    progress(2, 3, None, 125.0)
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "bench: 3 group(s) to measure; at most about 6:00 (groups x budget); time left estimated after the first"
    )
    assert lines[1] == "bench: 1/3 (33%), 0:00 elapsed, under 0:01 left"
    assert lines[2] == "bench: 2/3 (66%), 1:05 elapsed, about 2:05 left"


class _Sleeper:
    method, threads, malloc, last_cpu = "sleep", 1, None, None

    def time(self, fn, setup=None):
        t0 = time.perf_counter()
        fn(None)
        return time.perf_counter() - t0


def test_a_budget_bounds_the_group_and_keeps_the_minimum_repetitions():
    fns = {"a": (lambda _: time.sleep(0.01), None), "b": (lambda _: time.sleep(0.01), None)}
    t0 = time.perf_counter()
    st = timing.interleaved(_Sleeper(), fns, reps=10_000, budget_s=0.3)
    took = time.perf_counter() - t0
    assert took <= 0.3 + 0.1, took  # no round starts that would end past the budget (0.1: scheduling slack)
    assert len(st["a"].samples) >= timing.MIN_REPS
    slow = {"a": (lambda _: time.sleep(0.15), None)}
    st = timing.interleaved(_Sleeper(), slow, reps=50, budget_s=0.1)
    assert len(st["a"].samples) == timing.MIN_REPS  # over budget: the minimum, not fewer
    use = bench.budget_use(st, 0.1, time.perf_counter() - t0)
    assert use["over"] and use["slowest"] == "a" and use["reps"] == timing.MIN_REPS
    line = eta.over_budget([{"budget": use}])
    said = r"over budget: \d+\.\d s > 0.1 s \(one a call takes 0\.\d s and 3 repetitions are the minimum\)"
    assert re.fullmatch(said, line), line


def test_bench_bounds_each_group_and_a_time_limit_stops_between_groups(tmp_path):
    """The user's command, as a subprocess: progress lines with the time left, every group within
    its budget (plus one first call), and the groups left at the time limit said."""
    argv = [sys.executable, "-m", "rfbench", "bench", "--grid", "smoke", "--layers", "acu", "--cases", "odd"]
    argv += ["--backends", "torch-naive", "--threads", "1", "--budget", "0.5", "--out", str(tmp_path)]
    res = subprocess.run(argv + ["--time-limit", "0.01"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "--time-limit 0.01 s reached: 3 group(s) left unmeasured" in res.stdout  # torch's import took longer
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 or "NO SPEED RESULT" in res.stdout, res.stderr  # 1 only: all contended
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("bench: ")]
    assert lines[0].startswith("bench: 3 group(s) to measure; at most about 0:02 (groups x budget)")
    assert lines[1].startswith("bench: 1/3 (33%)") and "left" in lines[1] and "0:00 left" not in lines[1]
    assert lines[-1].startswith("bench: 3/3 (100%)") and "done" in lines[-1]
    from rfbench.harness import results

    rows = results.load([str(tmp_path / bench.RESULTS)])
    for r in rows:
        if r["budget"]["over"]:  # said at the end too, not only in its progress line
            assert f"{r['layer']}-{r['case']} {r['pass']}: over budget: " in res.stdout
        assert r["budget"]["budget_s"] == 0.5
        assert r["budget"]["spent_s"] <= 0.5 or r["budget"]["over"]
        assert r["budget"]["reps"] >= timing.MIN_REPS
