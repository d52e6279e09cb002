"""Console output: progress lines with a time estimate when output is redirected, backends that
cannot run collapsed into one line each, and the verdict with the report's path at the end."""

import io

from rfbench.harness import cli, console, fdcheck, results, runner
from rfbench.harness import cases as casegrid


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_progress_prints_one_flushed_line_per_group_with_the_time_left():
    clock, out = Clock(), io.StringIO()
    progress = console.Progress("bench", stream=out, clock=clock)
    for i in range(1, 4):
        clock.t += 10 * i  # groups of 10, 20 and 30 s
        progress(i, 3)
    lines = out.getvalue().splitlines()
    assert lines == [
        "bench: 1/3 (33%), 0:10 elapsed, about 0:20 left",
        "bench: 2/3 (66%), 0:30 elapsed, about 0:15 left",
        "bench: 3/3 (100%), 1:00 elapsed, done",
    ]


def test_progress_throttles_redirected_lines_but_always_prints_the_last():
    clock, out = Clock(), io.StringIO()
    progress = console.Progress("matrix", stream=out, every_s=10, clock=clock)
    for i in range(1, 101):
        clock.t += 1
        progress(i, 100)
    lines = out.getvalue().splitlines()
    assert 9 <= len(lines) <= 12 and lines[-1].startswith("matrix: 100/100") and lines[0].startswith("matrix: 1/100")


def test_matrix_summary_collapses_backends_that_cannot_run(seed):
    grid = [c for c in casegrid.grid("smoke") if c.layer == "acu" and c.name in ("odd", "pixel")]
    rows = runner.matrix(grid, ["torch-naive", "reference", "cupy", "no-such"], ["float32", "float64"], ["cpu"], seed)
    text = console.matrix_summary(rows)
    lines = text.splitlines()
    assert sum(line.startswith("cupy") for line in lines) == 1
    assert any(line.startswith("cupy: not run on cpu float32, cpu float64 (") for line in lines)
    assert any(line.startswith("reference: not run on cpu float32 (") for line in lines)
    assert sum(line.startswith("acu ") for line in lines) == 3  # torch-naive x 2 dtypes, reference float64
    assert lines[-2].startswith("Agreement: 3 of 3 ") and lines[-1].startswith("Gradients: every backend")


def test_report_command_ends_with_the_verdict_and_the_path(tmp_path, capsys, seed):
    res = tmp_path / "rows.jsonl"
    grid = [c for c in casegrid.grid("smoke") if c.name == "odd" and c.layer == "njet"]
    results.append(str(res), runner.matrix(grid, ["torch-naive"], ["float64"], ["cpu"], seed=seed))
    results.append(str(res), fdcheck.rows(seed, grid=[c for c in fdcheck.CASES if c.id == "njet-fd-stride2"]))
    assert cli.main(["report", str(res), "--out", str(tmp_path / "rep")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-5] == "Verdict:"
    assert lines[-4].startswith("- PASS Agreement: 1 of 1 ") and lines[-3].startswith("- PASS Gradients: ")
    assert lines[-2].startswith("- NOT MEASURED Speed vs gamma: no speed rows")
    assert lines[-1].startswith(f"report: {tmp_path / 'rep' / 'report.html'} ")


def test_bench_summary_is_one_line_per_layer_and_pass_and_one_per_missing_backend():
    def row(backend, pass_, up, **kw):
        base = {"kind": "speed", "layer": "dau", "case": "paper", "pass": pass_, "backend": backend, "device": "cpu"}
        base.update(dtype="float32", group=pass_, status="ok", speedup=up, model_gamma=21.0, paper_gamma=10.125)
        return {**base, **kw}

    rows = [row("torch-naive", p, 1.0) for p in ("forward", "backward")]
    rows += [row("numba", "forward", 4.5), row("numba", "backward", 1.7, flags=["contended"])]
    rows += [row("cupy", p, None, status="skip", reason="cupy not installed") for p in ("forward", "backward")]
    lines = console.bench_summary(rows).splitlines()
    fwd = next(line for line in lines if line.startswith("dau        forward"))
    assert "numba" in fwd and "4.50" in fwd and "21.0" in fwd
    back = next(line for line in lines if line.startswith("dau        backward"))
    assert back.split()[-1] == "1" and "numba" not in back  # the only candidate was contended
    assert [line for line in lines if "cupy" in line] == ["cupy: not run on cpu float32 (cupy not installed)"]


def test_a_speed_group_line_names_the_speed_ups_and_the_exclusion():
    clock, out = Clock(), io.StringIO()
    progress = console.Progress("bench", stream=out, clock=clock)
    base = {"kind": "speed", "layer": "dau", "case": "paper", "pass": "forward", "status": "ok", "model_gamma": 21.0}
    rows = [
        {**base, "backend": "torch-naive", "speedup": 1.0},
        {**base, "backend": "numba", "speedup": 4.62, "flags": ["contended"]},
        {**base, "backend": "torch-fast", "speedup": 2.27},
    ]
    clock.t += 5
    progress(1, 2, rows)
    assert out.getvalue() == (
        "bench: 1/2 (50%), 0:05 elapsed, about 0:05 left | dau-paper forward: numba 4.62x, torch-fast 2.27x "
        "over torch-naive (model gamma 21.0) [contended]\n"
    )
