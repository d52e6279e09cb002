"""Reports from results files: the verdict comes first and is computed from the rows (change a
row, the verdict changes), every figure is drawn with a caption, missing values read "-", old
speed rows without the fields of issue 13 still render, results from several machines merge,
and ``compare`` flags a regression beyond the noise."""

import json

import pandas as pd
import pytest

from rfbench.harness import analysis, bench, cases, fdcheck, report, results, runner, verdict

FIGURES = ("speedup_vs_gamma", "sweeps", "error_heatmap", "gradient_accuracy", "dau_approximations")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small real results: a matrix, the DAU studies, one central-difference case and a speed sweep."""
    tmp = tmp_path_factory.mktemp("results")
    corr = tmp / "matrix.jsonl"
    grid = [c for c in cases.grid("smoke") if c.name in ("odd", "stride2", "batch0") and c.layer in ("dau", "acu")]
    results.append(str(corr), runner.matrix(grid, ["torch-naive", "reference", "cupy"], ["float64"], ["cpu"], seed=1))
    study = tmp / "analysis.jsonl"
    results.append(str(study), analysis.mu_grad_rows() + analysis.gap_rows(size=12)[:16])
    fd = tmp / "fd.jsonl"
    results.append(str(fd), fdcheck.rows(seed=1, grid=[c for c in fdcheck.CASES if c.id == "acu-fd"]))
    speed = [
        cases.Case("side5", "dau", n=1, s=2, f=2, h=8, w=8, k=2, sigma=0.5, spread=1.9, radius=1, seed=3),
        cases.Case("paper", "dau", n=1, s=2, f=2, h=8, w=8, k=2, sigma=0.5, spread=3.9, radius=1, seed=4),
    ]
    bench.sweep(speed, ["torch-naive", "torch-fast"], "cpu", "float64", str(tmp), reps=3, threads=1, budget_s=1)
    # The tests are about the report, not about this machine's load: drop the flags a busy test
    # machine puts on speed rows (the verdict's exclusions are tested with flags set by hand).
    rows = [{**r, "flags": []} if r.get("flags") else r for r in results.load([str(tmp / bench.RESULTS)])]
    return [str(corr), str(study), str(fd), _write(tmp / "bench-unflagged.jsonl", rows)]


def _rows(path):
    return results.load([path])


def _write(path, rows):
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return str(path)


def test_report_opens_with_the_verdict_then_figures_then_tables(files, tmp_path):
    out = tmp_path / "report"
    md = open(report.write(files, str(out))).read()
    assert md.index("## Verdict") < md.index("## Figures") < md.index("## Detailed tables")
    for title in ("Agreement:", "Gradients:", "Speed vs gamma:", "Gradient accuracy: acu", "Speed against gamma"):
        assert title in md.split("## Figures")[0], title
    assert "10.125" in md and "12.54" in md and "3.25" in md
    assert "cupy: " not in md and "| cupy | cpu float64 | cupy not installed |" in md  # one line per backend
    html = (out / "report.html").read_text()
    assert html.index("id='verdict'") < html.index("<figure") < html.index("<details>")
    assert html.count("data:image/png;base64,") == len(FIGURES) and "src='http" not in html
    for name in FIGURES:
        assert (out / f"{name}.png").stat().st_size > 1000
        assert f"id='fig-{name}'" in html
    assert html.count("<figcaption>") == len(FIGURES) and html.count("Run: ") >= len(FIGURES)
    assert ">None<" not in html and ">nan<" not in html and "<td>-</td>" in html
    brief = (out / "verdict.md").read_text()
    assert all(line in md for line in brief.splitlines() if line.startswith(("- ", "| ")))
    assert "Gradient accuracy: acu" not in brief and "Speed against gamma" in brief
    assert "table" in (out / "summary.csv").read_text().splitlines()[0]


def test_verdict_is_computed_from_the_rows(files, tmp_path):
    """Change one row of each kind: the matching verdict line changes."""
    base = verdict.compute(report.frame(files))["lines"]
    assert base[0].startswith("Agreement: ") and "0 failed" in base[0]
    assert base[1].startswith("Gradients: ") and "within" in base[1] and "agree with" in base[1]
    assert base[2].startswith("Speed vs gamma: ")
    assert "implausible: 0 of 6 groups" in base[2] or "flags: not recorded" in base[2]  # rows before issue 13

    corr = _rows(files[0])
    row = next(r for r in corr if r["backend"] == "torch-naive" and r["output"] == "forward")
    row.update(status="fail", bound_ratio=3.5)
    grad = next(r for r in corr if r["backend"] == "torch-naive" and r["output"] == "weight")
    grad.update(status="fail", bound_ratio=7.25, rel_err=0.5)
    fd = _rows(files[2])
    fd[0].update(status="fail", bound_ratio=2.5)
    speed = _rows(files[3])
    fast = next(r for r in speed if r["backend"] == "torch-fast" and r["case"] == "paper" and r["pass"] == "forward")
    fast["speedup"] = 123.0
    if "speedups" in fast:  # rows of issue 13 carry one speed-up per baseline
        fast["speedups"]["torch-naive"] = 123.0
    slow = next(r for r in speed if r["case"] == "side5" and r["pass"] == "backward")
    slow["flags"] = ["contended"]
    changed = [
        _write(tmp_path / "m.jsonl", corr),
        files[1],
        _write(tmp_path / "fd.jsonl", fd),
        _write(tmp_path / "b.jsonl", speed),
    ]
    out = tmp_path / "report"
    report.write(changed, str(out))
    lines = [line[2:] for line in (out / "verdict.md").read_text().splitlines() if line.startswith("- ")]
    assert lines[0] != base[0] and "FAILING: torch-naive" in lines[0] and "3.5 of its rounding bound" in lines[0]
    assert "OUTSIDE" in lines[1] and "7.25 of the bound" in lines[1] and "d/dweight" in lines[1]
    assert "DISAGREE" in lines[1] and "2.5 of the bound" in lines[1]
    assert "123.00x over torch-naive" in lines[2] and "1 of 6 groups" in lines[2]


def _speed_row(backend, pass_, up, **extra):
    return {
        "kind": "speed",
        "layer": "dau",
        "case": "paper",
        "pass": pass_,
        "backend": backend,
        "device": "cuda",
        "dtype": "float32",
        "status": "ok",
        "group": "g-" + pass_,
        "median_s": 1.0 / up,
        "speedup": up,
        "model_gamma": 21.0,
        "paper_gamma": 10.125,
        "env": {"machine": "gpu-box"},
        **extra,
    }


def test_new_speed_fields_are_read_and_old_rows_render_dashes(tmp_path):
    """Rows with ``speedups``/``gammas``/``flags`` (issue 13) give the conv2d-std columns;
    rows without them leave those cells "-"."""
    new = [
        _speed_row("torch-naive", "forward", 1.0),
        _speed_row("conv2d-std", "forward", 2.0),
        _speed_row(
            "cupy",
            "forward",
            8.4,
            speedups={"torch-naive": 8.4, "conv2d-std": 4.2},
            gammas={"torch-naive": 21.0, "conv2d-std": 10.5},
            flags=["noisy: iqr/median 0.2"],
        ),
        _speed_row("cupy", "forward+backward", 99.0, flags=["implausible: speed-up 99 > gamma 21"]),
    ]
    table = verdict.speed(report.frame([_write(tmp_path / "new.jsonl", new)]))
    fwd = table[table["pass"] == "forward"].iloc[0]
    assert fwd["x over conv2d-std"] == 4.2 and fwd["gamma conv2d-std"] == 10.5
    assert fwd["measured/gamma conv2d-std"] == pytest.approx(0.4)
    both = table[table["pass"] == "forward+backward"].iloc[0]
    assert pd.isna(both["best backend"]) and both["excluded groups"] == 1
    out = tmp_path / "new"
    report.write([str(tmp_path / "new.jsonl")], str(out))
    assert (
        "cupy 8.40x over torch-naive (0.40 of model gamma 21.0), 4.20x over conv2d-std"
        in (out / "verdict.md").read_text()
    )

    old = [{k: v for k, v in r.items() if k not in ("speedups", "gammas", "flags")} for r in new[:3]]
    out = tmp_path / "old"
    report.write([_write(tmp_path / "old.jsonl", old)], str(out))
    text = (out / "verdict.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| gpu-box (?) | cuda | float32 | dau | forward"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6:11] == ["cupy", "8.4", "21", "0.4", "-"]


def test_results_from_two_machines_merge_by_machine(files, tmp_path):
    other = tmp_path / "other.jsonl"
    with open(files[0]) as src, open(other, "w") as dst:
        for line in src:
            row = json.loads(line)
            if "env" in row:  # the file's env line (schema 2) or every row's env (schema 1)
                row["env"] = {**row["env"], "machine": "second-host"}
            dst.write(json.dumps(row) + "\n")
    table = report.correctness_table(report.frame([files[0], str(other)]))
    assert set(table["machine"].str.split(" ").str[0]) >= {"second-host"} and table["machine"].nunique() == 2
    ran, _ = verdict.agreement(report.frame([files[0], str(other)]))
    assert ran["machine"].nunique() == 2


def _verdict_row(case, backend, macs, up, flags=()):
    return {
        "kind": "speed",
        "status": "ok",
        "machine": "m",
        "device": "cpu",
        "dtype": "float32",
        "layer": "dau",
        "pass": "forward",
        "case": case,
        "backend": backend,
        "group": case,
        "macs_naive": macs,
        "speedups": {"torch-naive": up, "conv2d-std": up / 2},
        "gammas": {"torch-naive": 4.0, "conv2d-std": 2.0},
        "paper_gamma": 2.0,
        "flags": list(flags),
    }


def test_speed_verdict_reads_a_case_with_work_and_says_when_all_were_excluded():
    import pandas as pd

    from rfbench.harness import verdict

    rows = [_verdict_row("batch0", "numba", 0, 1.0), _verdict_row("odd", "numba", 1e6, 3.0)]
    table = verdict.speed(pd.DataFrame(rows))
    assert set(table["case"]) == {"odd"}  # not the empty batch, alphabetically first
    line = verdict.speed_line(table)
    assert "odd case" in line and "3.00x over torch-naive" in line
    excluded = [_verdict_row("odd", "numba", 1e6, 3.0, ["contended"])]
    line = verdict.speed_line(verdict.speed(pd.DataFrame(excluded)))
    assert "no group left to judge" in line and "nan" not in line
