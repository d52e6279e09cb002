"""``rfbench``: the command line.

rfbench backends                       the registry: what each backend runs, why not
rfbench matrix [--grid smoke] ...      correctness matrix vs the float64 reference
rfbench bench [--grid paper] ...       speed sweep: interleaved timing, speed-up, gamma
rfbench report RESULTS... [--out DIR]  report.md, report.html (figures embedded), summary.csv
rfbench compare A B [--fail-above 5%]  two runs of one machine kind side by side, regressions tested
rfbench all [--out DIR]                matrix + central differences + DAU studies + paper benchmark + report
rfbench gpu-run --out DIR --budget-s S  a short GPU loan -> the GPU results, step by step (--rehearse: on the CPU)

RESULTS are files or folders of *.jsonl files (one folder per machine merges in one report).
Exit status: 0 done, 1 a check failed (matrix failures, compare regressions, machine not
quiet, NO SPEED RESULT: every speed group contended), 2 usage error (bad argument, missing or
unreadable file, unavailable device, an --out that cannot be written: checked before any work), 3
results could not be written while running (full disk, ...: the file keeps every whole group, rerun
to resume), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): rerun the same command with the
same --out to resume a benchmark.
"""

import argparse
import os
import random
import signal
import sys


class UsageError(Exception):
    """A mistake in what the user asked for: printed as one line, exit status 2."""


def _requires(command, *modules):
    """A command that writes a report or a figure needs pandas (and matplotlib): say so in one line."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"{command} needs {' and '.join(modules)}; not installed here: {', '.join(missing)} "
            f"(pip install {' '.join(missing)})"
        )


def _check_device(device):
    if device == "cuda":
        from ..impls._registry import cuda_available

        if not cuda_available():
            raise UsageError("--device cuda: no CUDA device is available on this machine (torch sees none)")


def cmd_backends(args):
    from .. import impls  # the registry: no torch

    for b in impls.backend_table():
        state = "available" if b["unavailable"] is None else f"unavailable: {b['unavailable']}"
        if b["origin"] == "peer":  # an external implementation, never to be mistaken for ours
            state = f"PEER ({b['library']}, not ours; `pip install rfbench[peers]`), {state}"
        print(f"{b['backend']:<12} {state}")
        print(
            f"{'':<12} layers {', '.join(b['layers'])}; devices {', '.join(b['devices'])}; "
            f"dtypes {', '.join(b['dtypes'])}"
            + (f" (on CUDA also {', '.join(b['cuda_dtypes'])})" if b.get("cuda_dtypes") else "")
            + f"; passes {', '.join(b['passes'])}"
        )
        print(f"{'':<12} {b['summary']}")
    return 0


def _writable(path, folder=False):
    """An ``--out`` checked before any work: a usage error (exit 2) if it cannot be written."""
    from .results import OutputError, writable

    try:
        writable(path, folder)
    except OutputError as exc:
        raise UsageError(exc.strerror or str(exc)) from None


def cmd_matrix(args):
    if args.out:
        _writable(args.out)
    from .. import impls
    from . import cases, console, results, runner

    if args.device != "all":
        _check_device(args.device)
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


# Options of ``bench --shape``: name -> (the layers it applies to, what it sets on the case).
SHAPE_OPTIONS = {
    "units": (("dau", "dau_gauss", "acu"), "k"),
    "spread": (("dau", "dau_gauss", "acu"), "spread"),
    "sigma": (("dau", "dau_gauss", "njet"), "sigma"),
    "order": (("njet",), "order"),
    "radius": (("dau", "dau_gauss", "njet"), "radius"),
    "stride": (("dau", "dau_gauss", "acu", "njet"), "stride"),
    "groups": (("dau", "dau_gauss", "njet"), "channel_groups"),
}


def user_case(args):
    """``bench --layer L --shape N,S,F,H,W [--units K] [--spread PX] ...`` -> one ``Case``: the layer's
    paper case (harness/cases.py) at the user's shape and parameters, so the group runs the same
    backends, baselines and cost model (gamma) as the paper's.  Checked before torch loads; every
    message names the argument.  Its name spells the shape and the parameters given, so each shape
    keeps its own group in bench.jsonl."""
    from dataclasses import replace

    from . import cases

    if args.layer is None:
        raise UsageError("--shape: needs --layer (one of dau, dau_gauss, acu, njet)")
    if args.cases or args.layers:
        raise UsageError("--shape: times one case of its own; drop --cases / --layers (the grid is not used)")
    given = {k: getattr(args, k) for k in SHAPE_OPTIONS if getattr(args, k) is not None}
    for k in given:
        layers, _ = SHAPE_OPTIONS[k]
        if args.layer not in layers:
            raise UsageError(f"--{k}: {args.layer} has no such parameter (it applies to {', '.join(layers)})")
    base = next(c for c in cases.grid("paper", [args.layer]) if c.name == "paper")
    n, s_, f_, h, w = args.shape
    spec = f"{n}x{s_}x{f_}x{h}x{w}" + "".join(f"-{k}{v:g}" for k, v in sorted(given.items()))
    fields = {SHAPE_OPTIONS[k][1]: v for k, v in given.items()}
    if "sigma" in given and "radius" not in given and args.layer != "dau_gauss":
        fields["radius"] = None  # the layer's own rule for the new sigma (dau_gauss has none: its fixed radius)
    g = given.get("groups", 1)
    if s_ % g or f_ % g:
        raise UsageError(f"--groups: expected a divisor of both S = {s_} and F = {f_} (--shape), got {g}")
    case = replace(base, name="shape-" + spec, n=n, s=s_, f=f_, h=h, w=w, **fields)
    try:
        case.resolved_radius()
    except ValueError as exc:
        raise UsageError(f"--radius: {exc}") from None
    return case


def _shape(text):
    parts = text.split(",")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = None
    if vals is None or len(vals) != 5 or min(vals) < 1:
        raise argparse.ArgumentTypeError(
            f"expected N,S,F,H,W: five integers >= 1 (batch, in, out, height, width), got {text!r}"
        )
    return tuple(vals)


def _positive_number(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return v


def _nonneg_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return v


def cmd_bench(args):
    if getattr(args, "shape", None) is None:
        for k in ("layer", *SHAPE_OPTIONS):
            if getattr(args, k, None) is not None:
                raise UsageError(f"--{k}: only with --shape N,S,F,H,W (a shape of your own)")
    user = user_case(args) if getattr(args, "shape", None) else None
    _writable(args.out, folder=True)
    from .. import impls
    from . import bench, cases, console

    _check_device(args.device)
    grid = [user] if user else cases.grid(args.grid, args.layers)
    if getattr(args, "cases", None):
        unknown = sorted(set(args.cases) - {c.name for c in grid})
        if unknown:
            names = ", ".join(sorted({c.name for c in grid}))
            raise UsageError(f"--cases: {', '.join(unknown)} not in grid {args.grid} (it has {names})")
        grid = [c for c in grid if c.name in args.cases]
    backends = args.backends or [b for b in impls.BACKENDS if b != "reference"]
    if bench.BASELINE not in backends:
        backends = [bench.BASELINE] + backends
    args.resume = f"every finished group is saved in {os.path.join(args.out, bench.RESULTS)}"
    shard = getattr(args, "shard", None)
    share = "" if shard is None else f", share {shard[0]}/{shard[1]} of its groups"
    what = f"your shape, {user.id}" if user else f"grid {args.grid}"
    print(
        f"speed sweep: {what} ({len(grid)} cases x 3 passes{share}), backends {', '.join(backends)}, "
        f"{args.dtype} on {args.device}, {args.threads} thread(s), results in {args.out}/{bench.RESULTS}"
    )
    done = bench.sweep(
        grid,
        backends,
        args.device,
        args.dtype,
        args.out,
        args.seed,
        args.reps,
        args.threads,
        console.Progress("bench"),
        args.budget,
        require_quiet=args.require_quiet,
        retry_contended=args.retry_contended,
        shard=shard,
        ftz=getattr(args, "ftz", "off") == "on",
        deadline=_deadline(args),
    )
    print(f"groups: {done.summary()}")
    if done.left:
        print(
            f"--time-limit {args.time_limit:g} s reached: {done.left} group(s) left unmeasured; rerun the same "
            "command (same --out) to measure only those"
        )
    print(console.bench_summary(done.rows))
    from .eta import over_budget

    groups = {}
    for r in done.rows:
        groups.setdefault(r.get("group"), []).append(r)
    for rows in groups.values():
        over = over_budget(rows)
        if over:
            print(f"{rows[0]['layer']}-{rows[0]['case']} {rows[0]['pass']}: {over}")
    bad = [r for r in done.rows if bench.excluded(r)]
    if bad:
        print(f"{len(bad)} row(s) flagged contended or implausible: excluded from verdicts and headlines")
    contended, groups = bench.contended_groups(done.rows)
    if groups and contended == groups:
        print(bench.NO_SPEED_RESULT.format(n=groups))
        return 1
    return 0


def _deadline(args):
    """``--time-limit`` as a ``time.monotonic()`` deadline counted from the command's start, or None."""
    import time

    if getattr(args, "time_limit", None) is None:
        return None
    return getattr(args, "deadline", None) or time.monotonic() + args.time_limit


def cmd_report(args):
    _requires("rfbench report", "pandas", "matplotlib")
    from . import console, report, results

    paths = results.files(args.results)
    results.load(paths)  # bad input is said in one line before the output folder exists
    _writable(args.out, folder=True)
    path = report.write(paths, args.out)
    print(console.finish(paths, path))
    return 0


def cmd_compare(args):
    from . import compare

    if args.json and args.json != "-":
        _writable(args.json)
    try:
        res = compare.compare(args.a, args.b, args.fail_above, args.force)
    except compare.NotComparable as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        compare.write_json(res, args.json)
    if args.json != "-":
        print(compare.text(res))
    if not res["rows"]:
        _error("no speed rows in common")
        return 1
    return 1 if res["regressions"] else 0


def _percent(text):
    try:
        v = float(text.rstrip("%")) / 100
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage such as 5%, got {text!r}") from None
    if not 0 <= v < 10:
        raise argparse.ArgumentTypeError(f"expected a percentage in 0%..1000%, got {text}")
    return v


def cmd_all(args):
    _requires("rfbench all", "pandas", "matplotlib")  # before the runs, not after them
    _writable(args.out, folder=True)
    from . import analysis, bench, console, fdcheck, report, results

    _check_device(args.device)
    args.resume = "nothing of the correctness matrix is kept (its rows are written when it ends)"
    args.rerun = "no speed group was measured yet; rerun the same command (same --out) to start again"
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
    args.resume = f"the correctness matrix is saved in {matrix_path}"
    args.rerun = "no speed group was measured yet; rerun the same command (same --out) to start again"
    study = os.path.join(args.out, "analysis.jsonl")
    if os.path.exists(study):
        os.remove(study)
    results.append(study, analysis.rows(args.seed or 0))
    fd = os.path.join(args.out, "fd.jsonl")
    if os.path.exists(fd):
        os.remove(fd)
    progress = console.Progress("reference vs central differences", every_s=10)
    results.append(fd, fdcheck.rows(args.seed or 0, progress=progress))
    args.resume = f"every finished speed group is saved in {os.path.join(args.out, bench.RESULTS)}"
    args.rerun = None  # from here on: the default, resume the speed sweep
    bench_args = argparse.Namespace(**{**vars(args), "grid": args.bench_grid, "layers": None, "backends": None})
    bench_args.dtype, bench_args.seed = "float32", args.seed or 0
    speed_status = cmd_bench(bench_args)
    paths = [matrix_path, study, fd, os.path.join(args.out, bench.RESULTS)]
    path = report.write(paths, args.out)
    print(console.finish(paths, path))
    if speed_status:  # said again last, where a user looks
        print(bench.NO_SPEED_RESULT.format(n=bench.contended_groups(results.load([paths[-1]]))[1]))
    return status or speed_status


def cmd_gpu_run(args):
    from . import gpurun

    if not args.rehearse:
        _check_device("cuda")
    limits = {}
    for item in args.limit or []:
        name, _, secs = item.partition("=")
        if name not in gpurun.NAMES:
            raise UsageError(f"--limit: step {name!r} unknown (steps: {', '.join(gpurun.NAMES)})")
        try:
            limits[name] = _positive_float(secs)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"--limit {item}: {exc}") from None
    _writable(args.out, folder=True)
    return gpurun.run(args.out, args.budget_s, args.rehearse, limits, args.steps, args.seed)


def _int_in(lo, hi=None, what="an integer"):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            span = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"expected {what} {span}, got {v}")
        return v

    return parse


def _shard(text):
    """``I/N`` -> ``(I, N)`` with ``1 <= I <= N`` (``rfbench bench --shard``)."""
    i, sep, n = text.partition("/")
    try:
        i, n = int(i), int(n)
    except ValueError:
        i = n = None
    if not sep or i is None or not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N (this machine's share of N), got {text!r}")
    return i, n


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number of seconds, got {text}")
    return v


def default_threads():
    """Half this process's cores, at least 1 (``--threads``' default; its help says why)."""
    from .machine import cores

    return max(1, cores() // 2)


def _speed_options(p):
    """Options shared by ``bench`` and ``all``: repetitions, budget, threads, load control."""
    from .eta import MIN_REPS
    from .machine import cores

    p.add_argument("--reps", type=_int_in(1), default=5, help="timed repetitions per backend (after warm-up)")
    p.add_argument(
        "--budget",
        type=_positive_float,
        default=120.0,
        metavar="SECONDS",
        help="the most one group (a case x pass, every backend) may take: no repetition starts that would end "
        f"past it, but {MIN_REPS} are always kept, and a group whose minimum is longer says so (default 120). "
        "Part of a group's key: groups measured under another budget are measured again",
    )
    p.add_argument(
        "--time-limit",
        type=_positive_float,
        metavar="SECONDS",
        help="stop starting groups after SECONDS from the start of the command (the group running then finishes, "
        "within its --budget); what is left is said, and a rerun with the same --out measures only that",
    )
    p.add_argument(
        "--threads",
        type=_int_in(1, cores(), "a thread count"),
        default=default_threads(),
        help=f"threads of every backend (torch, numba, OpenMP), held for the whole run (default {default_threads()}: "
        "half the cores, at least 1: with every core taken, any other process on the machine makes the threads "
        "wait on each other and the group is flagged contended; half leaves room for the rest of the machine)",
    )
    p.add_argument(
        "--require-quiet",
        type=_positive_float,
        metavar="SECONDS",
        help="before each group wait up to SECONDS for a quiet machine, else stop (exit 1) instead of measuring",
    )
    p.add_argument("--retry-contended", action="store_true", help="measure again groups flagged contended")
    p.add_argument(
        "--ftz",
        choices=("on", "off"),
        default="off",
        help="on: time every backend and peer with flush-to-zero on, then again with it off to flag subnormal "
        "stalls (rows: ftz, daz, unflushed_median_s, subnormal_slowdown); off (default): as the CPU is set",
    )


def choices():
    """The names the options accept, from where each is defined: the grids of ``harness.cases``, and the
    layers, backends and dtypes of the registry (``impls._registry``, whose layers are the contract's
    table).  Reading them loads neither torch nor a backend. -> ``(grids, layers, backends, dtypes)``"""
    from ..impls import _registry
    from .cases import GRIDS

    return tuple(sorted(GRIDS)), _registry.LAYERS, tuple(_registry.BACKENDS), _registry.DTYPES


def parser():
    GRIDS, LAYERS, BACKENDS, DTYPES = choices()
    p = argparse.ArgumentParser(
        prog="rfbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("backends", help="list the backends, what they run, and why not").set_defaults(fn=cmd_backends)
    m = sub.add_parser("matrix", help="correctness matrix against the float64 reference")
    m.add_argument("--grid", default="smoke", choices=GRIDS)
    m.add_argument("--layers", nargs="+", choices=LAYERS)
    m.add_argument("--backends", nargs="+", choices=BACKENDS)
    m.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=DTYPES)
    m.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    m.add_argument("--seed", type=_int_in(0), help="data seed (default: fresh, printed)")
    m.add_argument("--out", help="append result rows to this JSON-lines file")
    m.set_defaults(fn=cmd_matrix)
    b = sub.add_parser("bench", help="speed sweep with the theoretical speed-up (appends JSON lines, resumable)")
    b.add_argument("--grid", default="paper", choices=GRIDS)
    b.add_argument("--layers", nargs="+", choices=LAYERS)
    b.add_argument("--cases", nargs="+", metavar="NAME", help="only the cases of these names (e.g. paper)")
    b.add_argument("--backends", nargs="+", choices=BACKENDS)
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    b.add_argument("--dtype", default="float32", choices=DTYPES)
    b.add_argument("--out", default="results", help="folder of bench.jsonl (rerun with the same folder to resume)")
    u = b.add_argument_group(
        "a shape of your own",
        "--layer L --shape N,S,F,H,W times that layer at that shape instead of the grid, with the same backends, "
        "baselines (torch-naive; conv2d-std for dau) and cost model (gamma); what is not given is the layer's "
        "paper case's (harness/cases.py)",
    )
    u.add_argument("--layer", choices=LAYERS, help="the layer to time at --shape")
    u.add_argument("--shape", type=_shape, metavar="N,S,F,H,W", help="batch, input and output channels, height, width")
    u.add_argument("--units", type=_int_in(1), metavar="K", help="units (dau, dau_gauss) or synapses (acu)")
    u.add_argument(
        "--spread",
        type=_nonneg_float,
        metavar="PX",
        help="displacements uniform in [-PX, PX] pixels (dau, dau_gauss, acu); conv2d-std's side is 2 ceil(PX) + 1",
    )
    u.add_argument("--sigma", type=_positive_number, help="the Gaussian scale (dau, dau_gauss, njet)")
    u.add_argument("--order", type=_int_in(0), help="the basis order (njet)")
    u.add_argument("--radius", type=_int_in(0), help="the Gaussian radius in pixels (dau, dau_gauss, njet)")
    u.add_argument("--stride", type=_int_in(1), help="the stride")
    u.add_argument(
        "--groups",
        type=_int_in(1),
        metavar="G",
        help="channel groups (dau, dau_gauss, njet), as nn.Conv2d's; G = S = F is depthwise (conv2d-std too)",
    )
    _speed_options(b)
    b.add_argument("--seed", type=_int_in(0), default=0)
    b.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="measure only share I of N of the grid's groups (round-robin; N machines, I = 1..N, cover it once)",
    )
    b.set_defaults(fn=cmd_bench)
    r = sub.add_parser("report", help="write report.md / report.html / summary.csv from results files or folders")
    r.add_argument("results", nargs="+", help="results files, or folders of them (e.g. one per machine)")
    r.add_argument("--out", default="report")
    r.set_defaults(fn=cmd_report)
    c = sub.add_parser(
        "compare", help="compare the speed rows of two runs (like with like: same CPU/ISA/GPU and threads)"
    )
    c.add_argument("a", help="results file or folder of the earlier run")
    c.add_argument("b", help="results file or folder of the later run")
    c.add_argument(
        "--fail-above",
        type=_percent,
        default=0.05,
        metavar="PCT",
        help="slower by more than this is a regression (5%%)",
    )
    c.add_argument("--json", metavar="PATH", help="also write the comparison as JSON (- for standard output only)")
    c.add_argument("--force", action="store_true", help="compare runs of different machines or thread counts")
    c.set_defaults(fn=cmd_compare)
    a = sub.add_parser("all", help="matrix + paper benchmark + DAU studies + report (the main job)")
    a.add_argument("--out", default="results/all", help="folder of the results files and the report")
    a.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the benchmark")
    a.add_argument("--matrix-grid", default="default", choices=GRIDS)
    a.add_argument("--bench-grid", default="paper", choices=GRIDS)
    _speed_options(a)
    a.add_argument("--seed", type=_int_in(0))
    a.set_defaults(fn=cmd_all)
    g = sub.add_parser(
        "gpu-run",
        help="on a GPU machine lent for minutes: every check and measurement in priority order, each step "
        "in its own process and time limit, files written as they come (--rehearse: the same on the CPU)",
    )
    g.add_argument("--out", required=True, help="folder of the result files (at most 8) and summary.md")
    g.add_argument("--budget-s", type=_positive_float, default=520.0, help="seconds for the whole run (default 520)")
    g.add_argument("--rehearse", action="store_true", help="run the driver on the CPU with small cases")
    g.add_argument("--steps", nargs="+", metavar="STEP", help="only these steps (in the driver's order)")
    g.add_argument("--limit", action="append", metavar="STEP=SECONDS", help="cap one step's time (repeatable)")
    g.add_argument("--seed", type=_int_in(0), default=0)
    g.set_defaults(fn=cmd_gpu_run)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is so that it ends as Ctrl-C does."""


def _terminated(signum, frame):
    raise Terminated()


def _error(msg):
    sys.stderr.write(f"rfbench: error: {msg}\n")


def main(argv=None):
    """Parse, fix the thread environment before torch or numba load, run -> exit status."""
    import time

    args = parser().parse_args(argv)
    if getattr(args, "time_limit", None) is not None:
        args.deadline = time.monotonic() + args.time_limit  # counted from here, before torch loads
    if getattr(args, "threads", None):
        from .machine import apply_thread_env

        apply_thread_env(args.threads)
    from .machine import NotQuiet
    from .results import OutputError, ResultsError

    signal.signal(signal.SIGTERM, _terminated)  # like Ctrl-C: what is saved stays, and it is said
    try:
        return args.fn(args)
    except (UsageError, ResultsError) as exc:
        _error(str(exc))
        return 2
    except OutputError as exc:
        _error(f"{exc.strerror or exc}; every whole group written so far is kept: free the space and rerun")
        return 3
    except KeyboardInterrupt as exc:
        hint = getattr(args, "resume", None)
        rerun = getattr(args, "rerun", None) or "rerun the same command (same --out) to measure only the rest"
        where = f"{hint}; {rerun}" if hint else "nothing saved"
        term = isinstance(exc, Terminated)
        _error(f"{'terminated (SIGTERM)' if term else 'interrupted'}: {where}")
        return 143 if term else 130
    except NotQuiet as exc:
        _error(f"stopped before measuring: {exc}; rerun later with the same --out to resume")
        return 1
    except BrokenPipeError:  # `rfbench backends | head`: the reader left, nothing to say
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # -m rfbench.harness.cli, or -m harness.cli in a checkout: the package module
    from rfbench.harness.cli import main as _main

    sys.exit(_main())
