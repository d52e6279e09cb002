"""The command line: a user's mistake gives one line on stderr and exit status 2 (never a
traceback), a failed check 1, Ctrl-C 130 with how to resume; ``--help`` and ``backends`` start
without importing torch; results folders of several machines load with the machine on every row."""

import csv
import json
import os
import subprocess
import sys

import pytest

from rfbench import impls
from rfbench.harness import bench, cases, cli, machine, results, runner, timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _usage(argv, capsys):
    """argparse's own errors: usage line + one error line, exit 2."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    return err


def test_choices_come_from_the_registry_the_layer_table_and_the_grids():
    from rfbench.reference import LAYERS

    actions = {a.dest: a for a in cli.parser()._subparsers._group_actions[0].choices["bench"]._actions}
    assert tuple(actions["backends"].choices) == tuple(impls.BACKENDS)
    assert tuple(actions["layers"].choices) == tuple(LAYERS)
    assert tuple(actions["grid"].choices) == tuple(sorted(cases.GRIDS))
    assert tuple(actions["dtype"].choices) == tuple(runner.DTYPES)


def test_missing_and_malformed_files_are_one_line_usage_errors(tmp_path, capsys):
    for argv in (["report", str(tmp_path / "missing.jsonl")], ["compare", str(tmp_path / "missing.jsonl"), "x"]):
        code, _, err = _run(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and "does not exist" in err
    readme = os.path.join(ROOT, "README.md")
    code, _, err = _run(["compare", readme, readme], capsys)
    assert code == 2 and err.count("\n") == 1 and "README.md:1: not a JSON-lines results file" in err
    code, _, err = _run(["report", str(tmp_path)], capsys)
    assert code == 2 and "holds no *.jsonl" in err


@pytest.mark.parametrize(
    "argv, says",
    [
        (["bench", "--reps", "0"], "--reps: expected an integer >= 1, got 0"),
        (["bench", "--reps", "many"], "expected an integer, got 'many'"),
        (["bench", "--budget", "-1"], "--budget: expected a positive finite number of seconds"),
        (["bench", "--threads", "0"], "--threads: expected a thread count in 1.."),
        (["all", "--require-quiet", "nan"], "--require-quiet: expected a positive finite number"),
        (["bench", "--grid", "huge"], "invalid choice: 'huge'"),
        (["bench", "--shard", "0/2"], "--shard: expected I/N with 1 <= I <= N (this machine's share of N), got '0/2'"),
        (["bench", "--shard", "3/2"], "--shard: expected I/N with 1 <= I <= N"),
        (["bench", "--shard", "1/0"], "--shard: expected I/N with 1 <= I <= N"),
        (["bench", "--shard", "2"], "--shard: expected I/N with 1 <= I <= N (this machine's share of N), got '2'"),
        (["bench", "--shard", "a/b"], "--shard: expected I/N"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(argv, says, capsys):
    assert says in _usage(argv, capsys)


@pytest.mark.skipif(impls._registry.cuda_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("argv", [["bench", "--device", "cuda"], ["matrix", "--device", "cuda"]])
def test_an_unavailable_device_is_a_usage_error(argv, tmp_path, capsys):
    code, _, err = _run(argv + ["--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "--device cuda: no CUDA device" in err and err.count("\n") == 1


def test_ctrl_c_says_how_to_resume(tmp_path, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "sweep", interrupted)
    code, _, err = _run(["bench", "--out", str(tmp_path), "--threads", "1"], capsys)
    assert code == 130 and "rerun the same command (same --out)" in err and "bench.jsonl" in err


def test_a_busy_machine_with_require_quiet_stops_with_status_1(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.setattr(timing, "peaks", lambda *a, **k: {"peak_macs": 1e11, "peak_bytes": 1e10})
    monkeypatch.setattr(machine, "quiet", lambda threads: (False, "2.0 other runnable thread(s)"))
    argv = ["bench", "--grid", "smoke", "--layers", "acu", "--backends", "torch-naive", "--threads", "1"]
    code, _, err = _run(argv + ["--out", str(tmp_path), "--require-quiet", "0.01"], capsys)
    assert code == 1 and "stopped before measuring" in err and "2.0 other runnable" in err


def test_bench_prints_how_many_groups_it_reused(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.setattr(timing, "peaks", lambda *a, **k: {"peak_macs": 1e11, "peak_bytes": 1e10})
    monkeypatch.setattr(machine, "WAIT_SHARE", 2.0)  # never contended: a loaded test machine would exit 1
    monkeypatch.setattr(machine, "LOAD_MARGIN", 1e9)
    monkeypatch.setattr(cases, "grid", lambda name, layers=None: [cases.Case("t", "acu", n=1, s=1, f=1, h=4, w=4)])
    argv = ["bench", "--backends", "torch-naive", "--threads", "1", "--reps", "2", "--budget", "0.1"]
    code, out, _ = _run(argv + ["--out", str(tmp_path)], capsys)
    assert code == 0 and "groups: 0 group(s) reused, 3 measured (3 new)" in out
    code, out, _ = _run(argv + ["--out", str(tmp_path), "--reps", "3"], capsys)
    assert "groups: 0 group(s) reused, 3 measured (3 measured again: other reps)" in out
    code, out, _ = _run(argv + ["--out", str(tmp_path), "--reps", "3"], capsys)
    assert "groups: 3 group(s) reused, 0 measured" in out


def test_shards_measure_every_group_once_and_report_merges_their_folders(tmp_path, monkeypatch, capsys, one_thread):
    """Three machines (``--shard 1/3`` .. ``3/3``) on a grid of 9 groups: disjoint shares, each group once,
    complete; the shares' sizes differ by at most one; ``rfbench report`` reads the three folders as one."""
    pytest.importorskip("pandas", reason="rfbench report needs pandas")
    pytest.importorskip("matplotlib", reason="rfbench report needs matplotlib")
    monkeypatch.setattr(timing, "peaks", lambda *a, **k: {"peak_macs": 1e11, "peak_bytes": 1e10})
    grid = [cases.Case("t", "acu", n=1, s=1, f=1, h=4, w=4), cases.Case("u", "acu", n=1, s=1, f=1, h=5, w=3)]
    grid.append(cases.Case("v", "njet", n=1, s=1, f=1, h=4, w=4))  # 3 cases x 3 passes: 9 groups
    monkeypatch.setattr(cases, "grid", lambda name, layers=None: grid)
    monkeypatch.setattr(machine, "WAIT_SHARE", 2.0)  # never contended: a loaded test machine would exit 1
    monkeypatch.setattr(machine, "LOAD_MARGIN", 1e9)
    argv = ["bench", "--backends", "torch-naive", "--threads", "1", "--reps", "1", "--budget", "0.05"]
    seen, sizes = [], []
    for i in (1, 2, 3):
        code, out, _ = _run(argv + ["--out", str(tmp_path / f"s{i}"), "--shard", f"{i}/3"], capsys)
        assert code == 0 and f"share {i}/3 of its groups" in out
        rows = results.load([str(tmp_path / f"s{i}")])
        slots = {(r["case"], r["pass"]) for r in rows}
        assert all(bench.promised(r["layer"], r["key"]) <= {x["backend"] for x in rows if x["group"] == r["group"]}
                   for r in rows)  # fmt: skip
        seen += sorted(slots)
        sizes.append(len(slots))
    assert sorted(seen) == sorted({(c.name, p) for c in grid for p in bench.costmodel.PASSES})  # each once
    assert max(sizes) - min(sizes) <= 1
    code, out, _ = _run(["report", *(str(tmp_path / f"s{i}") for i in (1, 2, 3)), "--out", str(tmp_path / "r")], capsys)
    assert code == 0
    with open(tmp_path / "r" / "summary.csv", newline="") as fh:
        table = [r for r in csv.DictReader(fh) if r["table"] == "Speed per case and pass"]
    assert sorted((r["case"], r["pass"]) for r in table) == sorted(seen)  # every group once, from 3 folders


def test_matrix_failures_exit_1(monkeypatch, capsys):
    fail = runner._row(cases.Case("t", "acu"), "torch-naive", "cpu", "float64", "forward", "fail", "off", 0)
    fail.update(rel_err=1.0, bound_ratio=9.0)
    monkeypatch.setattr(runner, "matrix", lambda *a, **k: [fail])
    code, out, _ = _run(["matrix", "--device", "cpu", "--seed", "1"], capsys)
    assert code == 1 and "FAIL acu-t torch-naive" in out


def test_help_and_backends_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from rfbench.harness import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        cli.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    cli.main(['backends'])\n"
        "print('torch' in sys.modules, 'numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    expect = "True False" if impls._registry.cuda_available() else "False False"  # a GPU host asks torch
    assert out.stdout.strip() == expect
    # the same CLI as a module of the package (and as harness.cli, a checkout's old name: test_gpurun)
    out = subprocess.run([sys.executable, "-m", "rfbench", "backends"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and all(name in out.stdout for name in impls.BACKENDS), out.stderr


def test_results_folders_of_several_machines_load_with_the_machine_on_every_row(tmp_path, monkeypatch):
    rows = [{"kind": "speed", "layer": "acu", "case": "t", "backend": "torch-naive", "median_s": 1.0}]
    for name in ("host-a", "host-b"):
        monkeypatch.setenv("RFBENCH_MACHINE", name)
        results.append(str(tmp_path / name / "bench.jsonl"), rows)
    (tmp_path / "host-b" / bench.SUPERSEDED).write_text(json.dumps(rows[0]) + "\n")  # left out of a folder
    old = tmp_path / "old.jsonl"  # written before rows had "machine": taken from the environment
    old.write_text(json.dumps({**rows[0], "env": {"machine": "host-c"}}) + "\n")
    got = results.load([str(tmp_path / "host-a"), str(tmp_path / "host-b"), str(old)])
    assert [r["machine"] for r in got] == ["host-a", "host-b", "host-c"]
    assert all(r["env"]["machine"] == r["machine"] for r in got[:2])


def test_the_stability_script_runs_a_group_in_fresh_processes(capsys):
    from rfbench.harness import stability

    argv = ["--case", "acu-odd", "--runs", "1", "--reps", "1", "--threads", "1"]
    argv += ["--backends", "torch-naive", "torch-fast"]
    assert stability.main(argv) == 0
    out = capsys.readouterr().out
    assert "run 1: torch-naive" in out and "torch-fast: CPU-time speed-up over torch-naive" in out


def test_the_readme_pytest_benchmark_command_writes_its_json(tmp_path):
    """README: ``pytest suites/benchmarks --benchmark-json=out.json`` (here on one small case)."""
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "pytest", "suites/benchmarks", f"--benchmark-json={out}", "--grid", "default"]
    cmd += ["-k", "acu-odd-forward-torch-naive", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not an xdist worker itself
    env.update(PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), RFBENCH_THREADS="1")
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:]
    data = json.loads(out.read_text())
    assert [b["name"] for b in data["benchmarks"]] == ["test_speed[acu-odd-forward-torch-naive]"]
    policy = data["machine_info"]["rfbench"]["thread_env"]["OMP_WAIT_POLICY"]
    assert policy in ("PASSIVE", os.environ.get("OMP_WAIT_POLICY"))  # a policy the user set is kept


def test_an_unknown_case_name_is_a_usage_error(tmp_path, capsys):
    code, _, err = _run(["bench", "--grid", "paper", "--cases", "paper", "nope", "--out", str(tmp_path)], capsys)
    assert code == 2 and "--cases: nope not in grid paper" in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / bench.RESULTS)


def test_bad_output_paths_are_refused_before_any_work(tmp_path):
    """An --out that cannot be written is one line and exit 2, before torch is imported (a user
    waits for nothing), and ``report`` leaves no empty folder behind when its input is bad."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    (tmp_path / "a-file").write_text("x")
    cases_ = [
        (["matrix", "--out", "/proc/x.jsonl"], "--out /proc/x.jsonl: cannot write this file"),
        (["bench", "--out", "/proc/x"], "--out /proc/x: cannot write this folder"),
        (["all", "--out", str(tmp_path / "a-file")], "expected a folder, found a file"),
        (["report", os.path.join(ROOT, "reports", "cpu"), "--out", "/dev/null/x"], "cannot write this folder"),
        (["gpu-run", "--rehearse", "--out", "/proc/y"], "cannot write this folder"),
    ]
    probe = "import sys, runpy; sys.argv = ['rfbench'] + sys.argv[1:]; "
    probe += "from rfbench.harness import cli; code = cli.main(sys.argv[1:]); "
    probe += "print('torch loaded' if 'torch' in sys.modules else 'no torch'); sys.exit(code)"
    for argv, msg in cases_:
        res = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
        assert res.returncode == 2 and msg in res.stderr and res.stderr.count("\n") == 1, (argv, res.stderr)
        if argv[0] != "report":
            assert "no torch" in res.stdout, argv
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(bad), "--out", str(tmp_path / "rep")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and not (tmp_path / "rep").exists(), res.stderr


def test_matrix_runs_without_pandas_and_matplotlib_and_report_names_them(tmp_path):
    """Where pandas and matplotlib are absent (a machine where nothing can be installed), ``python -m
    harness.cli matrix`` from the repository root writes and summarises its rows; the verdict lines, made
    with pandas, become one line saying so; ``report`` then says in one line what it needs (exit 2)."""
    block = "import sys; sys.modules.update(pandas=None, matplotlib=None)  # import pandas -> ImportError\n"
    run = block + "from rfbench.harness.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": ROOT}
    rows = tmp_path / "rows.jsonl"
    argv = "matrix --grid smoke --layers acu --backends reference torch-naive --out".split() + [str(rows)]
    r = subprocess.run([sys.executable, "-c", run, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert len(results.load([str(rows)])) > 0
    assert "verdict lines: needs pandas, not installed here" in r.stdout, r.stdout
    for argv, needs in ((["report", str(rows)], "pandas and matplotlib"),):
        r = subprocess.run([sys.executable, "-c", run, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert f"rfbench {argv[0]} needs {needs}; not installed here: pandas" in r.stderr, r.stderr
