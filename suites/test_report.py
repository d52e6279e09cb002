"""Reports from results files: every section and figure is written, HTML is self-contained,
results from several machines merge, and ``compare`` flags a regression beyond the noise."""

import copy
import json

from harness import analysis, bench, cases, report, results, runner


def _results(tmp_path):
    corr = tmp_path / "matrix.jsonl"
    grid = [c for c in cases.grid("smoke") if c.name in ("odd", "stride2")]
    results.append(str(corr), runner.matrix(grid, ["torch-naive", "reference"], ["float64"], ["cpu"], seed=1))
    study = tmp_path / "analysis.jsonl"
    results.append(str(study), analysis.mu_grad_rows() + analysis.gap_rows(size=12)[:16])
    speed = [
        cases.Case("side5", "dau", n=1, s=2, f=2, h=8, w=8, k=2, sigma=0.5, spread=1.9, radius=1, seed=3),
        cases.Case("paper", "dau", n=1, s=2, f=2, h=8, w=8, k=2, sigma=0.5, spread=3.9, radius=1, seed=4),
    ]
    bench.sweep(speed, ["torch-naive", "reference"], "cpu", "float64", str(tmp_path), reps=3, budget_s=1)
    return [str(corr), str(study), str(tmp_path / bench.RESULTS)]


def test_report_writes_every_section_and_figure(tmp_path):
    paths = _results(tmp_path)
    out = tmp_path / "report"
    md = (out / "report.md") if report.write(paths, str(out)) else None
    text = md.read_text()
    for title in ("Environment", "Correctness matrix", "Paper check", "geometric means", "Speed per case"):
        assert title in text
    assert "10.125" in text and "12.54" in text
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "src='http" not in html
    for name in ("speedup_vs_gamma", "sweeps", "error_heatmap", "dau_approximations"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert "table" in (out / "summary.csv").read_text().splitlines()[0]


def test_results_from_two_machines_merge_by_machine(tmp_path):
    paths = _results(tmp_path)
    other = tmp_path / "other.jsonl"
    with open(paths[0]) as src, open(other, "w") as dst:
        for line in src:
            row = json.loads(line)
            row["env"] = {**row["env"], "machine": "second-host"}
            dst.write(json.dumps(row) + "\n")
    table = report.correctness_table(report.frame([paths[0], str(other)]))
    assert set(table["machine"].str.split(" ").str[0]) >= {"second-host"} and table["machine"].nunique() == 2


def test_compare_flags_a_slowdown_beyond_the_noise(tmp_path):
    paths = _results(tmp_path)
    slow = tmp_path / "slow.jsonl"
    rows = results.load([paths[2]])
    with open(slow, "w") as fh:
        for r in rows:
            r = copy.deepcopy(r)
            if r.get("median_s"):
                r["median_s"] *= 3
            fh.write(json.dumps(r) + "\n")
    table = report.compare(paths[2], str(slow))
    assert len(table) and (table["verdict"] == "REGRESSION").all()
    same = report.compare(paths[2], paths[2])
    assert (same["verdict"] == "same").all()
