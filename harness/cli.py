"""``rfbench``: the command line.

rfbench backends                       the registry: what each backend runs, why not
rfbench matrix [--grid smoke] ...      correctness matrix vs the float64 reference
rfbench bench [--grid paper] ...       speed sweep: interleaved timing, speed-up, gamma
rfbench report RESULTS... [--out DIR]  report.md, report.html (figures embedded), summary.csv
rfbench compare A B                    two results files side by side, regressions flagged
rfbench all [--out DIR]                matrix + paper benchmark + DAU studies + report
"""

import argparse
import random
import sys

import impls

from . import analysis, bench, cases, console, fdcheck, report, results, runner


def cmd_backends(args):
    for b in impls.backend_table():
        state = "available" if b["unavailable"] is None else f"unavailable: {b['unavailable']}"
        print(f"{b['backend']:<12} {state}")
        print(
            f"{'':<12} layers {', '.join(b['layers'])}; devices {', '.join(b['devices'])}; "
            f"dtypes {', '.join(b['dtypes'])}; passes {', '.join(b['passes'])}"
        )
        print(f"{'':<12} {b['summary']}")
    return 0


def cmd_matrix(args):
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    grid = cases.grid(args.grid, args.layers)
    backends = args.backends or list(impls.BACKENDS)
    devs = runner.devices() if args.device == "all" else [args.device]
    print(
        f"correctness matrix: grid {args.grid} ({len(grid)} cases), backends {', '.join(backends)}, "
        f"dtypes {', '.join(args.dtypes)}, devices {', '.join(devs)}, seed {seed}"
    )
    rows = runner.matrix(grid, backends, args.dtypes, devs, seed, console.Progress("matrix", every_s=10))
    if args.out:
        results.append(args.out, rows)
        print(f"rows written to {args.out}")
    print(console.matrix_summary(rows))
    bad = [r for r in rows if r["status"] in ("fail", "error")]
    for r in bad:
        print(
            f"FAIL {r['layer']}-{r['case']} {r['backend']} {r['dtype']} {r['device']} {r['output']}: "
            f"{r['status']} rel_err={r['rel_err']} err/bound={r['bound_ratio']} {(r['reason'] or '').split(chr(10))[0]}"
        )
    return 1 if bad else 0


def cmd_bench(args):
    grid = cases.grid(args.grid, args.layers)
    backends = args.backends or [b for b in impls.BACKENDS if b != "reference"]
    if bench.BASELINE not in backends:
        backends = [bench.BASELINE] + backends
    print(
        f"speed sweep: grid {args.grid} ({len(grid)} cases x 3 passes), backends {', '.join(backends)}, "
        f"{args.dtype} on {args.device}, results in {args.out}/{bench.RESULTS}"
    )
    progress = console.Progress("bench")
    rows, done = bench.sweep(
        grid, backends, args.device, args.dtype, args.out, args.seed, args.reps, args.threads, progress, args.budget
    )
    if done:
        print(f"resumed: {done} groups were already measured in {args.out}/{bench.RESULTS}")
    print(console.bench_summary(rows))
    return 0


def cmd_report(args):
    path = report.write(args.results, args.out)
    print(console.finish(args.results, path))
    return 0


def cmd_compare(args):
    table = report.compare(args.a, args.b)
    if table.empty:
        print("no speed rows in common")
        return 1
    with __import__("pandas").option_context("display.width", 200, "display.max_rows", None):
        print(
            table[
                [
                    "layer",
                    "case",
                    "pass",
                    "backend",
                    "device",
                    "median_s_a",
                    "median_s_b",
                    "ratio_b_over_a",
                    "threshold",
                    "verdict",
                ]
            ].to_string(index=False)
        )
    regressions = int((table["verdict"] == "REGRESSION").sum())
    print(f"{regressions} regression(s) beyond the measured noise, {len(table)} rows compared")
    return 1 if regressions else 0


def cmd_all(args):
    import os

    os.makedirs(args.out, exist_ok=True)
    matrix_path = os.path.join(args.out, "matrix.jsonl")
    if os.path.exists(matrix_path):
        os.remove(matrix_path)
    status = cmd_matrix(
        argparse.Namespace(
            grid=args.matrix_grid,
            layers=None,
            backends=None,
            dtypes=["float32", "float64"],
            device="all",
            seed=args.seed,
            out=matrix_path,
        )
    )
    study = os.path.join(args.out, "analysis.jsonl")
    if os.path.exists(study):
        os.remove(study)
    results.append(study, analysis.rows(args.seed or 0))
    fd = os.path.join(args.out, "fd.jsonl")
    if os.path.exists(fd):
        os.remove(fd)
    progress = console.Progress("reference vs central differences", every_s=10)
    results.append(fd, fdcheck.rows(args.seed or 0, progress=progress))
    cmd_bench(
        argparse.Namespace(
            grid=args.bench_grid,
            layers=None,
            backends=None,
            device=args.device,
            dtype="float32",
            out=args.out,
            reps=args.reps,
            budget=args.budget,
            threads=None,
            seed=args.seed or 0,
        )
    )
    paths = [matrix_path, study, fd, os.path.join(args.out, bench.RESULTS)]
    path = report.write(paths, args.out)
    print(console.finish(paths, path))
    return status


def parser():
    p = argparse.ArgumentParser(
        prog="rfbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("backends", help="list the backends, what they run, and why not").set_defaults(fn=cmd_backends)
    m = sub.add_parser("matrix", help="correctness matrix against the float64 reference")
    m.add_argument("--grid", default="smoke", choices=sorted(cases.GRIDS))
    m.add_argument("--layers", nargs="+", choices=["dau", "dau_gauss", "acu", "njet"])
    m.add_argument("--backends", nargs="+", choices=list(impls.BACKENDS))
    m.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=list(runner.DTYPES))
    m.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    m.add_argument("--seed", type=int, help="data seed (default: fresh, printed)")
    m.add_argument("--out", help="append result rows to this JSON-lines file")
    m.set_defaults(fn=cmd_matrix)
    b = sub.add_parser("bench", help="speed sweep with the theoretical speed-up (appends JSON lines, resumable)")
    b.add_argument("--grid", default="paper", choices=sorted(cases.GRIDS))
    b.add_argument("--layers", nargs="+", choices=["dau", "dau_gauss", "acu", "njet"])
    b.add_argument("--backends", nargs="+", choices=list(impls.BACKENDS))
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    b.add_argument("--dtype", default="float32", choices=list(runner.DTYPES))
    b.add_argument("--out", default="results", help="folder of bench.jsonl (rerun with the same folder to resume)")
    b.add_argument("--reps", type=int, default=5, help="timed repetitions per backend (after warm-up)")
    b.add_argument(
        "--budget", type=float, default=20.0, help="seconds per group after which repetitions stop (>= 3 kept)"
    )
    b.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(fn=cmd_bench)
    r = sub.add_parser("report", help="write report.md / report.html / summary.csv from results files")
    r.add_argument("results", nargs="+")
    r.add_argument("--out", default="report")
    r.set_defaults(fn=cmd_report)
    c = sub.add_parser("compare", help="compare the speed rows of two results files")
    c.add_argument("a")
    c.add_argument("b")
    c.set_defaults(fn=cmd_compare)
    a = sub.add_parser("all", help="matrix + paper benchmark + DAU studies + report (the main job)")
    a.add_argument("--out", default="results/all", help="folder of the results files and the report")
    a.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the benchmark")
    a.add_argument("--matrix-grid", default="default", choices=sorted(cases.GRIDS))
    a.add_argument("--bench-grid", default="paper", choices=sorted(cases.GRIDS))
    a.add_argument("--reps", type=int, default=5)
    a.add_argument("--budget", type=float, default=20.0)
    a.add_argument("--seed", type=int)
    a.set_defaults(fn=cmd_all)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
