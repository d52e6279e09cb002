"""The smaller items of issue 29 (item 8): the test seed where ``-q`` shows it, a merged report
naming its machines, Ctrl-C in the matrix phase of ``all`` saying what was (not) saved, the model
gamma shown for excluded groups, seeds named by what they seeded, a readable legend and the paper
case standing out in figure 1."""

import os
import subprocess
import sys

import pandas as pd

from rfbench.harness import cli, figures, report, runner, verdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _speed(case, backend, up, machine="m", flags=(), pass_="forward"):
    return {
        "kind": "speed",
        "status": "ok",
        "machine": machine,
        "env": {"machine": machine},
        "device": "cpu",
        "dtype": "float32",
        "layer": "dau",
        "pass": pass_,
        "case": case,
        "backend": backend,
        "group": f"{machine}-{case}-{pass_}",
        "macs_naive": 1e6,
        "seed": 1,
        "speedups": {"torch-naive": up, "conv2d-std": up / 2},
        "gammas": {"torch-naive": 4.0, "conv2d-std": 2.0},
        "paper_gamma": 2.0,
        "flags": list(flags),
    }


def test_pytest_q_prints_the_seed():
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "suites/test_small_items.py",
            "-k",
            "gamma_of",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "RFBENCH_SEED": "4242"},
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:]
    assert "rfbench: seed 4242 (replay with RFBENCH_SEED=4242)" in res.stdout


def test_the_gamma_of_an_excluded_group_is_the_cost_models():
    t = verdict.speed(pd.DataFrame([_speed("odd", "numba", 3.0, flags=["contended"])]))
    (r,) = t.to_dict("records")
    assert r["best backend"] is None and r["x over torch-naive"] is None  # nothing measured to judge
    assert r["gamma torch-naive"] == 4.0 and r["gamma conv2d-std"] == 2.0  # but the model's gamma is known


def test_a_merged_report_names_the_machines_it_joins(tmp_path):
    from rfbench.harness import results

    for m in ("host-a", "host-b"):
        results.append(str(tmp_path / f"{m}.jsonl"), [_speed("paper", "numba", 3.0, machine=m)])
    paths = [str(tmp_path / f"{m}.jsonl") for m in ("host-a", "host-b")]
    report.write(paths, str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "verdict.md").read_text()
    assert "merged from 2 machines (host-a" in md and "; host-b" in md
    speed = next(line for line in md.splitlines() if "Speed vs gamma:" in line)
    assert "on cpu float32 of host-a" in speed and "on cpu float32 of host-b" in speed


def test_seeds_are_named_by_what_they_seeded():
    df = pd.DataFrame(
        [
            {"kind": "speed", "seed": 0, "machine": "m", "env": {}},
            {"kind": "correctness", "seed": 1064045320, "machine": "m", "env": {}},
        ]
    )
    assert figures.run(df).endswith("seed 0 (speed), seed 1064045320 (correctness)")


def test_ctrl_c_in_the_matrix_phase_of_all_does_not_claim_speed_groups(tmp_path, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "matrix", interrupted)
    code = cli.main(["all", "--out", str(tmp_path), "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 130
    assert "nothing of the correctness matrix is kept" in err and "no speed group was measured yet" in err
    assert "measure only the rest" not in err and "speed group is saved" not in err


def test_figure_1_legend_is_readable_and_the_paper_case_stands_out(monkeypatch):
    figs = []
    monkeypatch.setattr(figures, "_png", lambda fig: figs.append(fig) or b"png")
    rows = [_speed("paper", "numba", 3.0), _speed("side5", "numba", 2.0), _speed("side5", "torch-naive", 1.0)]
    speed = verdict.speed_rows(pd.DataFrame(rows))
    assert figures.speedup_vs_gamma(speed) is not None
    fig = figs[0]
    width_px = fig.get_size_inches()[0] * 110  # _png's dpi
    legend = fig.legends[0]
    size_px = legend.get_texts()[0].get_fontsize() * 110 / 72 * 1400 / width_px  # shown at 1400 px wide
    assert size_px >= 12, size_px
    assert any("our paper case" in t.get_text() for t in legend.get_texts())
    sizes = {float(s) for ax in fig.axes for c in ax.collections for s in c.get_sizes()}
    assert 130 in sizes and 36 in sizes  # the paper case drawn larger than the other cases
