"""One speed group measured in several fresh processes: are the speed-ups stable?

    python -m harness.stability [--case dau-paper] [--pass forward] [--runs 5] [--threads 2]
                                [--backends torch-naive torch-fast numba] [--env NAME=VALUE ...]

Each run is a new Python process with the harness's thread environment
(``harness.machine.thread_env``) and malloc thresholds (``harness.machine.fix_malloc``);
``--raw`` leaves both as they are, to see the behaviour without them; ``--env`` adds variables.
Prints each run's speed-ups over torch-naive by wall time and by process CPU time (which hardly
moves when other processes take the cores), the run-queue wait share and load, and per backend
the spread ``max / min - 1`` of the speed-ups.
"""

import argparse
import json
import subprocess
import sys

from . import machine


def _child(args):
    from . import bench, cases, timing

    case = next(c for c in cases.grid("full") if c.id == args.case)
    tm = timing.timer("cpu", args.threads, malloc=not args.raw)
    rows = bench.bench_group(case, args.pass_, args.backends, "cpu", "float32", tm, None, reps=args.reps, budget_s=60)
    ok = [r for r in rows if r["status"] == "ok"]
    cpu = {r["backend"]: r["cpu_median_s"] for r in ok}
    print(
        json.dumps(
            {
                "median_s": {r["backend"]: r["median_s"] for r in ok},
                "speedup": {r["backend"]: r["speedups"].get(bench.BASELINE) for r in ok},
                "cpu_speedup": {b: cpu[bench.BASELINE] / v for b, v in cpu.items() if b != bench.BASELINE},
                "load": ok[0]["load"],
                "threads": timing.thread_counts(),
            }
        )
    )


def main(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m {__package__}.stability", description=__doc__)
    p.add_argument("--case", default="dau-paper", help="case id (layer-name) of the full grid")
    p.add_argument("--pass", dest="pass_", default="forward", choices=["forward", "backward", "forward+backward"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=machine.cores())
    p.add_argument("--backends", nargs="+", default=["torch-naive", "torch-fast", "numba"])
    p.add_argument("--env", nargs="*", default=[], help="extra NAME=VALUE for the child processes")
    p.add_argument("--raw", action="store_true", help="do not apply the harness's thread environment")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    env = machine.child_env()
    if not args.raw:
        env.update(machine.thread_env(args.threads))
    env.update(kv.split("=", 1) for kv in args.env)
    root = machine.package_root()
    cmd = [sys.executable, "-m", f"{__package__}.stability", "--child", "--case", args.case, "--pass", args.pass_]
    cmd += ["--reps", str(args.reps), "--threads", str(args.threads), "--backends", *args.backends]
    cmd += ["--raw"] if args.raw else []
    ups, cpu_ups = {}, {}
    print(f"{args.case} {args.pass_}, {args.threads} thread(s), env {'raw' if args.raw else 'harness'} {args.env}")
    for i in range(args.runs):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
        if out.returncode:
            sys.stderr.write(out.stderr)
            return 1
        res = json.loads(out.stdout.strip().splitlines()[-1])
        for b, v in res["speedup"].items():
            ups.setdefault(b, []).append(v)
        for b, v in res["cpu_speedup"].items():
            cpu_ups.setdefault(b, []).append(v)
        times = " ".join(f"{b} {t * 1e3:.0f}ms" for b, t in res["median_s"].items())
        load = res["load"]
        print(
            f"run {i + 1}: {times}; speed-up "
            + " ".join(f"{b} {v:.2f}" for b, v in res["speedup"].items() if v)
            + "; by CPU time "
            + " ".join(f"{b} {v:.2f}" for b, v in res["cpu_speedup"].items())
            + f"; wait share {load['wait_share']:.2f}, load1 {load['load1_before']:.1f}, threads {res['threads']}"
        )
    for what, table in (("wall", ups), ("CPU-time", cpu_ups)):
        for b, v in table.items():
            v = [x for x in v if x]
            if v and b != "torch-naive":
                spread = max(v) / min(v) - 1
                print(f"{b}: {what} speed-up over torch-naive {min(v):.2f}-{max(v):.2f}, spread {spread:.1%}")
    return 0


if __name__ == "__main__":  # -m rfbench.harness.stability, or -m harness.stability in a checkout: the package module
    from rfbench.harness.stability import main as _main

    sys.exit(_main())
