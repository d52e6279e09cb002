"""``rfbench``: the command line.

    rfbench backends                       the registry: what each backend runs, why not
    rfbench matrix [--grid smoke] ...      correctness matrix vs the float64 reference
    rfbench bench [--grid paper] ...       speed sweep: interleaved timing, speed-up, gamma
"""
import argparse
import random
import sys
import time

import impls

from . import bench, cases, results, runner


def _progress(i, total, start=[None]):  # noqa: B006 - keeps the start time between calls
    if start[0] is None or i == 1:
        start[0] = time.time()
    if sys.stderr.isatty() or i == total:
        bar = "#" * (30 * i // total)
        sys.stderr.write(f"\r[{bar:<30}] {i}/{total} {time.time() - start[0]:5.0f}s")
        if i == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def cmd_backends(args):
    for b in impls.backend_table():
        state = "available" if b["unavailable"] is None else f"unavailable: {b['unavailable']}"
        print(f"{b['backend']:<12} {state}")
        print(f"{'':<12} layers {', '.join(b['layers'])}; devices {', '.join(b['devices'])}; "
              f"dtypes {', '.join(b['dtypes'])}; passes {', '.join(b['passes'])}")
        print(f"{'':<12} {b['summary']}")
    return 0


def cmd_matrix(args):
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    grid = cases.grid(args.grid, args.layers)
    backends = args.backends or list(impls.BACKENDS)
    devs = runner.devices() if args.device == "all" else [args.device]
    print(f"correctness matrix: grid {args.grid} ({len(grid)} cases), backends {', '.join(backends)}, "
          f"dtypes {', '.join(args.dtypes)}, devices {', '.join(devs)}, seed {seed}")
    rows = runner.matrix(grid, backends, args.dtypes, devs, seed, _progress)
    if args.out:
        results.append(args.out, rows)
        print(f"rows written to {args.out}")
    print(runner.format_summary(runner.summary(rows)))
    bad = [r for r in rows if r["status"] in ("fail", "error")]
    for r in bad:
        print(f"FAIL {r['layer']}-{r['case']} {r['backend']} {r['dtype']} {r['device']} {r['output']}: "
              f"{r['status']} rel_err={r['rel_err']} err/bound={r['bound_ratio']} {r['reason'].splitlines()[0] if r['reason'] else ''}")
    return 1 if bad else 0


def cmd_bench(args):
    grid = cases.grid(args.grid, args.layers)
    backends = args.backends or [b for b in impls.BACKENDS if b != "reference"]
    if bench.BASELINE not in backends:
        backends = [bench.BASELINE] + backends
    print(f"speed sweep: grid {args.grid} ({len(grid)} cases x 3 passes), backends {', '.join(backends)}, "
          f"{args.dtype} on {args.device}, results in {args.out}/{bench.RESULTS}")
    rows, done = bench.sweep(grid, backends, args.device, args.dtype, args.out, args.seed, args.reps, args.threads,
                             _progress, args.budget)
    if done:
        print(f"resumed: {done} groups were already measured in {args.out}/{bench.RESULTS}")
    print(bench.format_table(rows))
    return 0


def parser():
    p = argparse.ArgumentParser(prog="rfbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    b.add_argument("--budget", type=float, default=20.0, help="seconds per group after which repetitions stop (>= 3 kept)")
    b.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
