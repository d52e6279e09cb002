"""The speed sweep: resumable under a key of everything that changes a timing, complete on every
grid (no division by zero on a case with no work), with the conv2d-std baseline, thread counts
held for every backend, and flags for contended groups and impossible figures.  Also: the cost
model reproduces the paper's gamma.  Timings here are tiny cases; no figure is checked."""

import json

import pytest
import torch

from rfbench.harness import bench, cases, costmodel, machine, results, timing

FAKE_PEAK = {"peak_macs": 1e11, "peak_bytes": 1e10}


@pytest.fixture(autouse=True)
def no_probe(monkeypatch):
    """The peak probe runs in a child process (seconds): a fixed peak is enough here."""

    def peaks(device, ariths=("float32",), threads=None):
        return dict.fromkeys(ariths, FAKE_PEAK)

    monkeypatch.setattr(timing, "peaks", peaks)


def _tiny():
    return [
        cases.Case("tiny", "acu", n=1, s=2, f=2, h=6, w=6, k=3, seed=1),
        cases.Case("tiny", "njet", n=1, s=2, f=2, h=6, w=6, order=1, sigma=0.7, seed=2),
    ]


def _sweep(tmp_path, grid=None, backends=("torch-naive",), **kw):
    kw = {"reps": 3, "budget_s": 1, "threads": 1, **kw}
    return bench.sweep(grid or _tiny(), list(backends), "cpu", "float32", str(tmp_path), **kw)


def test_interrupted_sweep_resumes_with_only_the_missing_groups(tmp_path, one_thread):
    def stop_after_two(i, total, rows):
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path, progress=stop_after_two)
    path = tmp_path / bench.RESULTS
    assert len(results.load([str(path)])) == 2  # two finished groups of one backend
    done = _sweep(tmp_path)
    assert (done.reused, done.measured) == (2, 4) and done.why == {"new": 4}
    every = results.load([str(path)])
    keys = [(r["layer"], r["case"], r["pass"], r["backend"]) for r in every]
    assert len(keys) == len(set(keys)) == 6
    assert all(r["env"]["torch"] and r["median_s"] > 0 and len(r["samples_s"]) >= 3 for r in every)
    assert all(r["threads"] == 1 and r["key"]["threads"] == 1 and r["machine"] for r in every)
    again = _sweep(tmp_path)
    assert again.measured == 0 and again.reused == 6 and len(again.rows) == 6
    assert "6 group(s) reused, 0 measured" in again.summary()


@pytest.mark.parametrize(
    "change, field",
    [
        ({"backends": ("torch-naive", "torch-fast")}, "backends"),
        ({"threads": 2}, "threads"),
        ({"reps": 4}, "reps"),
        ({"seed": 3}, "seed"),
    ],
)
def test_a_group_under_another_key_is_measured_again(tmp_path, one_thread, change, field):
    if change.get("threads", 1) > machine.cores():
        pytest.skip(f"needs {change['threads']} cores, this machine has {machine.cores()}")
    _sweep(tmp_path)
    done = _sweep(tmp_path, **change)
    assert done.reused == 0 and done.measured == 6
    assert done.why == {f"measured again: other {field}": 6}, done.why
    current = results.load([str(tmp_path / bench.RESULTS)])
    old = results.load([str(tmp_path / bench.SUPERSEDED)])
    assert len({r["group"] for r in current}) == 6 and len(old) == 6  # one group per slot, old rows kept aside
    if field == "backends":  # the extra backend is measured everywhere
        assert sum(r["backend"] == "torch-fast" for r in current) == 6


def test_a_code_change_or_an_old_row_is_measured_again(tmp_path, one_thread, monkeypatch):
    _sweep(tmp_path)
    monkeypatch.setattr(bench, "code_version", lambda: "another-code")
    assert _sweep(tmp_path).why == {"measured again: other code": 6}
    path = tmp_path / bench.RESULTS
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "key"}) + "\n" for r in rows))
    assert _sweep(tmp_path).why == {"measured again: no key (rows from an older harness)": 6}


def test_the_code_version_is_a_hash_of_the_timed_sources():
    v = bench.code_version()
    assert len(v) == 12 and int(v, 16) >= 0


def test_every_grid_has_a_cost_model_without_division_by_zero():
    for case in cases.grid("full"):
        arrays = case.arrays()
        for p in costmodel.PASSES:
            m = costmodel.model(case, arrays, p)
            assert (m["model_gamma"] is None) == (m["macs_efficient"] == 0), case.id
            if case.layer == "dau":
                assert (m["std_gamma"] is None) == (m["macs_efficient"] == 0), case.id
            if case.n == 0 and p == "forward":
                assert m["model_gamma"] is None, case.id  # no work at all: no ratio


def test_a_case_with_no_work_is_measured(tmp_path, one_thread):
    grid = [c for c in cases.grid("smoke") if c.name == "batch0"]
    assert {c.layer for c in grid} == {"dau", "dau_gauss", "acu", "njet"}
    done = _sweep(tmp_path, grid=grid, backends=("torch-naive", "torch-fast"))
    assert done.measured == 12
    for r in done.rows:
        assert r["status"] == "ok", (r["layer"], r["backend"], r.get("reason"))
        assert r["median_s"] >= 0 and (r["model_gamma"] is None or r["pass"] != "forward")
    assert "batch0" in bench.format_table(done.rows)


def test_dau_rows_carry_both_baselines_and_their_gammas(tmp_path, one_thread):
    dau = cases.Case("small", "dau", n=1, s=2, f=3, h=9, w=8, k=2, sigma=0.5, spread=2.5, radius=1, seed=5)
    done = _sweep(tmp_path, grid=[dau, _tiny()[0]], backends=("torch-naive", "torch-fast"))
    by = {(r["layer"], r["pass"], r["backend"]): r for r in done.rows}
    assert ("acu", "forward", bench.STD) not in by  # ACU's torch-naive is already its dense conv2d
    for p in costmodel.PASSES:
        fast, std = by[("dau", p, "torch-fast")], by[("dau", p, bench.STD)]
        assert fast["baselines"] == ["torch-naive", "conv2d-std"] == list(fast["speedups"])
        assert fast["speedup"] == fast["speedups"]["torch-naive"]
        assert fast["gammas"]["torch-naive"] == pytest.approx(fast["model_gamma"])
        assert fast["gammas"]["conv2d-std"] == pytest.approx(fast["std_gamma"])
        for b, up in fast["speedups"].items():
            assert fast["over_gamma"][b] == pytest.approx(up / fast["gammas"][b])
        assert fast["paper_baseline"] == bench.STD
        assert fast["measured_over_paper_gamma"] == pytest.approx(fast["speedups"][bench.STD] / fast["paper_gamma"])
        assert std["macs"] == costmodel.std_macs(dau, fast["standard_side"], p)
        assert std["status"] == "ok" and "load" in std and isinstance(std["flags"], list)
        # its roofline counts the taps inside the image (a library may skip the padding's)
        inside = costmodel.inside(fast["standard_side"], dau.h, dau.w, dau.stride)
        floor = std["macs"] * inside / FAKE_PEAK["peak_macs"]
        assert inside < 1 and std["roofline_fraction"] >= floor / std["median_s"] * (1 - 1e-12)


def test_inside_counts_the_taps_that_read_the_image():
    """Per axis: the taps of each output pixel that land in [0, n) with padding side // 2."""
    assert costmodel.inside(1, 5, 7) == 1.0
    assert costmodel.inside(3, 1, 1) == pytest.approx(1 / 9)  # one pixel: only the centre tap of 9
    assert costmodel.inside(3, 4, 4) == pytest.approx((10 / 12) ** 2)  # 4 pixels x 3 taps, 2 fall outside
    assert costmodel.inside(9, 32, 32) == pytest.approx(((32 * 9 - 2 * (1 + 2 + 3 + 4)) / (32 * 9)) ** 2)
    assert costmodel.inside(3, 5, 5, stride=2) == pytest.approx((7 / 9) ** 2)  # outputs at 0, 2, 4


def test_conv2d_std_keeps_the_layer_output_shape():
    dau = cases.Case("s2", "dau", n=1, s=2, f=3, h=9, w=8, k=2, stride=2, spread=3.5, seed=6)
    arrays = dau.arrays()
    t = {k: torch.from_numpy(v).float().requires_grad_(True) for k, v in arrays.items() if v is not None}
    dy = torch.randn(dau.out_shape())
    side = costmodel.standard_side(dau, arrays)
    fn, setup = bench._std_callables(dau, side, t, dy, "backward", 0)
    assert tuple(setup().shape) == dau.out_shape()
    fn(setup())  # the backward runs against dy of the layer's output shape


def _row(**kw):
    row = {"status": "ok", "roofline_fraction": 0.3, "noisy": False, "iqr_rel": 0.01, "load": {"contended": False}}
    row.update(speedups={"torch-naive": 4.0}, gammas={"torch-naive": 10.0}, baseline_roofline={"torch-naive": 0.8})
    return {**row, **kw}


def test_impossible_figures_and_contention_are_flagged():
    assert bench.flags(_row()) == [] and not bench.excluded(_row())
    assert bench.flags(_row(roofline_fraction=2.9)) == ["implausible: roofline_fraction 2.90 > 1"]
    high = _row(speedups={"torch-naive": 30.1}, gammas={"torch-naive": 21.0})
    want = "implausible: speed-up 30.10 over torch-naive > gamma 21.00 / baseline roofline 0.80"
    assert bench.flags(high) == [want]  # 30.1 > 1.1 * 21 / 0.8: above the machine's peak
    assert bench.excluded(high)
    below_peak = {**high, "baseline_roofline": {"torch-naive": 0.6}}  # 30.1 < 1.1 * 21 / 0.6: possible
    assert bench.flags(below_peak) == ["above gamma: speed-up 30.10 over torch-naive > 21.00 (baseline below peak)"]
    assert not bench.excluded(below_peak)
    overhead_bound = {**high, "baseline_roofline": {"torch-naive": 0.01}}  # gamma bounds nothing there
    assert not bench.excluded(overhead_bound)
    std = {**high, "backend": "conv2d-std"}  # one dense baseline over the other: no MAC bound applies
    assert bench.flags(std) == [] and bench.flags({**high, "backend": "numba"}) != []
    busy = _row(load={"contended": True}, noisy=True, iqr_rel=0.23)
    assert bench.flags(busy) == ["contended", "noisy: iqr/median 0.23"] and bench.excluded(busy)
    table = bench.format_table(
        [
            {
                **high,
                "layer": "dau",
                "case": "x",
                "pass": "forward",
                "backend": "numba",
                "median_s": 1.0,
                "p10_s": 1.0,
                "p90_s": 1.0,
                "paper_gamma": 10.1,
                "model_gamma": 21.0,
                "gmacs_per_s": 1.0,
                "flags": bench.flags(high),
            }
        ]
    )
    figures = table.splitlines()[2].split("implausible")[0]  # the flag may name it; the columns must not
    assert "30.1" not in figures and " ! " in figures


def test_cpu_rows_carry_cpu_time_and_the_malloc_setting(tmp_path, one_thread):
    done = _sweep(tmp_path, grid=_tiny()[:1])
    for r in done.rows:
        assert len(r["cpu_samples_s"]) == len(r["samples_s"]) and r["cpu_median_s"] >= 0
        assert r["malloc"] is None or r["malloc"].startswith("glibc mmap_threshold=32MiB")


def test_the_load_meter_reads_the_run_queue():
    m = machine.Meter()
    sum(range(200000))
    load = m.stop()
    assert set(load) >= {"load1_before", "load1_after", "cpu_over_wall", "contended", "rule"}
    assert load["cpu_over_wall"] > 0 and isinstance(load["contended"], bool)


def test_a_busy_process_per_core_beside_ours_reads_contended():
    """Fair sharing of ``cores`` cores among ``cores + 1`` busy threads: each waits ~1/(cores+1)."""
    if machine._sched() is None:
        pytest.skip("no /proc/self/task/*/schedstat: the load-average fallback has no run-queue share")
    _, (_, _, busy) = machine.contention_demo(rounds=1, spinners=machine.cores(), seconds=0.5, say=None)
    assert busy["contended"] and busy["wait_share"] > machine.WAIT_SHARE, busy


def test_threads_hold_for_every_backend_after_numba_ran(tmp_path, one_thread):
    pytest.importorskip("numba")
    done = _sweep(tmp_path, grid=_tiny()[:1], backends=("torch-naive", "numba"), threads=1)
    assert torch.get_num_threads() == 1 and timing.thread_counts() == {"torch": 1, "numba": 1}
    assert {r["threads"] for r in done.rows} == {1}
    torch.set_num_threads(2 if machine.cores() >= 2 else 1)
    if machine.cores() >= 2:
        with pytest.raises(timing.ThreadDrift, match="expected 1"):
            timing.check_threads(1)


def test_a_busy_machine_stops_a_sweep_that_requires_quiet(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "quiet", lambda threads: (False, "3.0 other runnable thread(s)"))
    with pytest.raises(machine.NotQuiet, match="stayed busy"):
        _sweep(tmp_path, require_quiet=0.01)
    assert not (tmp_path / bench.RESULTS).exists()


def test_cost_model_reproduces_the_paper_gamma():
    """DAU IJCV Eq. 17: K = 2 units replacing a 9 x 9 kernel: gamma = 81 / 8 = 10.125."""
    assert costmodel.paper_gamma(9, 2) == 10.125
    case = cases.grid("paper", ["dau"])[0]
    model = costmodel.model(case, case.arrays(), "forward")
    assert model["standard_side"] == 9 and model["paper_gamma"] == 10.125
    assert model["macs_std"] == 8 * 32 * 32 * 192 * 64 * 81


def test_model_gamma_is_the_ratio_of_the_cost_columns():
    case = cases.grid("paper", ["dau"])[0]
    arrays = case.arrays()
    for p in costmodel.PASSES:
        m = costmodel.model(case, arrays, p)
        kh, kw = m["kernel_naive"]
        n, f_, ho, wo = case.out_shape()
        if p == "forward":
            assert m["macs_naive"] == n * ho * wo * f_ * case.s * kh * kw
            blur = n * case.h * case.w * case.s * 2 * (2 * case.resolved_radius() + 1)
            assert m["macs_efficient"] == 4 * n * ho * wo * f_ * case.s * case.k + blur
        assert m["model_gamma"] == pytest.approx(m["macs_naive"] / m["macs_efficient"])
        assert m["std_gamma"] == pytest.approx(m["macs_std"] / m["macs_efficient"])
