"""Speed sweeps: every case x pass, the backends timed interleaved, one row per measurement.

A (case, pass) group is measured as a whole (all backends interleaved, so each speed-up is a
ratio measured in one run on one machine) and appended to the results file as soon as it is
done: an interrupted sweep keeps every finished group.  A group is reused by a rerun only when
it was measured under the same key (``group_key``: case, pass, backend set, dtype, device,
threads, reps, budget, seed, machine and a hash of the timed code); a group measured under
another key is measured again and its old rows move to ``bench.superseded.jsonl``, so
``bench.jsonl`` holds one group per (case, pass, device, dtype).

Baselines (reference/README.md section 8, named in ``harness.baselines``): ``torch-naive`` (the
exact dense kernel) and, for DAU, ``conv2d-std``: a plain conv2d with a dense ``Ks x Ks`` kernel,
timing only, in FP32; on CUDA in float32 groups also ``conv2d-std-tf32`` (TF32 on) and
``conv2d-std-fp16`` / ``conv2d-std-bf16`` (the same conv in half precision).  Everything else in
a group runs with TF32 off and, on CUDA, with cuDNN's autotuner on (``precision``); each row
records the settings it ran under (``precision``) and the arithmetic it ran in (``run_precision``).

A speed row (``kind`` "speed", ``status`` ok / skip / error) carries, besides the case, the cost
model (``costmodel.model``) and the timing statistics (``timing.Stats.summary``: wall and process
CPU time):
``baselines`` (those that ran), ``speedups`` / ``gammas`` / ``over_gamma`` (baseline -> measured
speed-up, model speed-up, their ratio), ``speedup`` (= speedups["torch-naive"], 1 for itself),
``paper_baseline`` and ``measured_over_paper_gamma`` (over conv2d-std for DAU, torch-naive for
ACU), ``roofline_fraction`` (the time the row's MACs or bytes need at the probed peaks over its
median; conv2d-std's MACs counted inside the image), ``baseline_roofline`` (baseline -> its
roofline fraction), ``threads``, ``malloc``,
``load`` (``machine.Meter``: load1 before/after, cpu_over_wall, wait_share, contended, rule),
``vector`` (``env.vector``: numba's vector width and SLP, flush-to-zero and denormals-are-zero in
the timing thread; the CPU's vector ISA and torch's are in the row's ``env``),
``flags`` (``flags``), ``budget`` (``budget_use``: the group's budget, the seconds it took, the
repetitions kept, and whether and why it overran), ``key`` (``group_key``), ``precision`` and
``run_precision``, and ``machine``.
"""

import functools
import hashlib
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import torch

from .. import impls

from . import baselines, costmodel, env, eta, machine, precision, results, runner, timing

BASELINE = baselines.NAIVE
STD = baselines.STD
BASELINES = baselines.ALL
RESULTS = "bench.jsonl"
SUPERSEDED = "bench.superseded.jsonl"
# A figure this far beyond what can be is a measurement error, not a result: the peak probe is the
# best of 7 runs of matrix products and an unpadded conv2d (timing.CONV_PROBE), which a kernel can
# beat by a few percent, and the MAC model rounds.  conv2d-std's roofline counts only the taps inside
# the image (costmodel.inside): oneDNN skips the padding's, so counting every tap read the DAU paper
# case's 9 x 9 conv at 1.28 of a product-only probe on an AMD EPYC (flagged implausible wrongly).
SLACK = 1.10
# A speed-up above the model gamma means more MACs per second than the baseline ran: possible
# wherever the baseline runs below the machine's peak (measured here: numba acu forward 3.1x at
# gamma 2.7, its GEMM mixing near peak, torch-naive's conv2d at 0.6 of it).  What cannot be is an
# efficient backend above the peak: t_eff >= MACs_eff / peak, so speed-up = t_base / t_eff <=
# gamma / r_base with r_base the baseline's roofline fraction.  Above that bound a row is
# implausible; above gamma alone it is only marked ("above gamma"), not excluded.

# A backend more than this much slower with flush-to-zero off than on stalls on subnormal operands
# (x86 takes a microcode assist per subnormal operand or result): its unflushed time is that stall,
# not its speed, and is flagged as such (``flags``; the report shows the flag, not a speed).
STALL = 2.0
SKIP = "skip: "  # _first_call's prefix of a refusal (``impls.Inexpressible``)

# The code whose change changes a timing: every backend and the harness that drives it.
_TIMED = (
    "impls",
    "harness/bench.py",
    "harness/timing.py",
    "harness/runner.py",
    "harness/cases.py",
    "harness/precision.py",
    "harness/baselines.py",
)


@functools.lru_cache(maxsize=None)
def code_version():
    """Hash of the timed sources (``_TIMED``: *.py, *.cu) -> 12 hex digits.  Unlike a git commit it
    changes with uncommitted edits and not with edits elsewhere (reports, tests, docs)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for top in _TIMED:
        full = os.path.join(root, top)
        paths = [full] if os.path.isfile(full) else []
        for d, _, names in os.walk(full):
            paths += [os.path.join(d, n) for n in names if n.endswith((".py", ".cu"))]
        for p in sorted(paths):
            h.update(os.path.relpath(p, root).encode())
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:12]


def group_key(case, pass_, backends, device, dtype, threads, reps, budget_s, seed, ftz=False):
    """Everything that changes a timing of this group -> dict (stored on every row as ``key``)."""
    fields = hashlib.sha256(json.dumps(case.fields(), sort_keys=True).encode()).hexdigest()[:8]
    return {
        "case": f"{case.id}#{fields}",
        "pass": pass_,
        "backends": sorted(backends),
        "dtype": dtype,
        "device": str(device),
        "threads": threads,
        "reps": reps,
        "budget_s": budget_s,
        "seed": seed,
        "machine": machine.machine_name(),
        "code": code_version(),
        "ftz": bool(ftz),  # timed with flush-to-zero on (``STALL``); rows from before it was keyed: off
    }


def _slot(layer, case, pass_, device, dtype):
    return (layer, case, pass_, str(device), dtype)


def _row_slot(r):
    return _slot(r["layer"], r["case"], r["pass"], r["device"], r["dtype"])


def _callables(case, backend, t, dy, pass_):
    """``(fn, setup)`` timing one pass of ``backend``; the forward a backward needs is built untimed in ``setup``."""
    leaves = [v for v in t.values() if v is not None]

    def fwd(_):
        with torch.no_grad():
            runner.call(case, backend, t)

    def setup():
        return runner.call(case, backend, t)

    def bwd(y):
        torch.autograd.grad(y, leaves, dy)

    def both(_):
        y = runner.call(case, backend, t)
        torch.autograd.grad(y, leaves, dy)

    return {"forward": (fwd, None), "backward": (bwd, setup), "forward+backward": (both, None)}[pass_]


def _std_callables(case, side, t, dy, pass_, seed, variant=STD):
    """``conv2d-std`` (reference/README.md section 8): conv2d of ``x`` with a dense ``[F, S/G, side, side]``
    kernel and the case's ``G`` channel groups (a depthwise layer against a depthwise conv), padding
    ``side // 2`` (so ``Ho = ceil(H / stride)`` as the layer's); backward w.r.t. ``x`` and the kernel.
    Timing only: it computes a different function.  ``variant`` (``baselines.STD_VARIANTS``) picks the
    dtype (its own copies of ``x``, the kernel and ``dy``) and whether TF32 is on while it runs."""
    run_dtype, tf32 = baselines.STD_VARIANTS[variant]
    dt = runner.DTYPES[run_dtype] if variant != STD else t["x"].dtype
    x = t["x"] if dt == t["x"].dtype else t["x"].detach().to(dt).requires_grad_(True)
    dy = dy if dy.dtype == dt else dy.to(dt)
    gen = torch.Generator().manual_seed(seed)
    g_ = case.channel_groups
    w = torch.randn(case.f, case.s // g_, side, side, generator=gen, dtype=torch.float64).to(dt).to(x.device)
    w.requires_grad_(True)
    bias = t.get("bias")
    bias = None if bias is None else bias if bias.dtype == dt else bias.detach().to(dt)
    leaves = [x, w]

    def conv():
        with precision.fp32(tf32):
            return torch.nn.functional.conv2d(x, w, bias, stride=case.stride, padding=side // 2, groups=g_)

    def fwd(_):
        with torch.no_grad():
            conv()

    def bwd(y):
        with precision.fp32(tf32):
            torch.autograd.grad(y, leaves, dy)

    def both(_):
        with precision.fp32(tf32):
            torch.autograd.grad(conv(), leaves, dy)

    return {"forward": (fwd, None), "backward": (bwd, conv), "forward+backward": (both, None)}[pass_]


def _peak_memory(fn, setup, device):
    if torch.device(device).type != "cuda":
        return None
    state = setup() if setup else None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn(state)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _first_call(tm, fn, setup):
    """One untimed call: None if it ran, else the error message (the backend then gets an error row)."""
    try:
        tm.time(fn, setup)
    except timing.ThreadDrift:
        raise
    except impls.Inexpressible as exc:  # a peer refusing what its mapping cannot make exact: a refusal
        return SKIP + str(exc)
    except Exception as exc:  # a backend failing is a result row, not the end of the sweep
        return f"{type(exc).__name__}: {exc}".split("\n")[0]
    return None


def _macs(b, cost):
    """MACs of backend or baseline ``b`` in this group (every conv2d-std variant does the same work)."""
    if b == BASELINE:
        return cost["macs_naive"]
    return cost["macs_std"] if b in baselines.STD_VARIANTS else cost["macs_efficient"]


def _speed_fields(b, med, cost):
    """Speed-ups of ``b`` over each baseline that ran, the model gamma of each, their ratios."""
    macs = {x: _macs(x, cost) for x in BASELINES}
    mine = macs.get(b, cost["macs_efficient"])
    speedups, gammas, over = {}, {}, {}
    for base in BASELINES:
        if base == b or base not in med or not med[b]:
            continue
        speedups[base] = med[base] / med[b]
        gammas[base] = macs[base] / mine if macs[base] and mine else None
        over[base] = speedups[base] / gammas[base] if gammas[base] else None
    paper_base = STD if STD in speedups else BASELINE
    up = speedups.get(paper_base)
    return {
        "baselines": [x for x in BASELINES if x in med],
        "speedups": speedups,
        "gammas": gammas,
        "over_gamma": over,
        "speedup": 1.0 if b == BASELINE else speedups.get(BASELINE),
        "measured_over_model_gamma": over.get(BASELINE),
        "paper_baseline": paper_base,
        "measured_over_paper_gamma": up / cost["paper_gamma"] if up and cost["paper_gamma"] else None,
    }


def flags(row):
    """Flags of one ok speed row: contended group, impossible figures (``SLACK``; see above),
    noisy samples -> list of str."""
    out = []
    if (row.get("load") or {}).get("contended"):
        out.append("contended")
    rf = row.get("roofline_fraction")
    if rf is not None and rf > SLACK:
        out.append(f"implausible: roofline_fraction {rf:.2f} > 1")
    # The gamma bound holds for an efficient backend over a dense baseline; between the two dense
    # baselines (13 x 13 vs 9 x 9 conv2d) it does not: a library's rate depends on the kernel side.
    ups = {} if row.get("backend") in BASELINES else row.get("speedups") or {}
    for base, up in ups.items():
        g = (row.get("gammas") or {}).get(base)
        r_base = (row.get("baseline_roofline") or {}).get(base)
        if not g or up <= SLACK * g:
            continue
        if r_base and up > SLACK * g / min(1.0, r_base):
            out.append(f"implausible: speed-up {up:.2f} over {base} > gamma {g:.2f} / baseline roofline {r_base:.2f}")
        else:
            out.append(f"above gamma: speed-up {up:.2f} over {base} > {g:.2f} (baseline below peak)")
    if row.get("noisy"):
        out.append(f"noisy: iqr/median {row['iqr_rel']:.2f}")
    slow = row.get("subnormal_slowdown")
    if slow is not None and slow > STALL:
        out.append(f"subnormal stall: {slow:.1f}x slower with flush-to-zero off")
    return out


def origin(b):
    """``"ours"`` or ``"peer"`` for a registered backend (``impls._registry``), ``"baseline"`` for conv2d-std."""
    return impls.BACKENDS[b].origin if b in impls.BACKENDS else "baseline"


UNFLUSHED = "unflushed"


def _unflushed(fn, setup):
    """``(fn, setup)`` run with flush-to-zero and denormals-are-zero off (set and reset around the call,
    a few nanoseconds inside the timed region), to be timed interleaved with the flushed calls: A B
    A' B' A B ..., so that the ratio of the two medians is not a change of load between two runs."""

    def run(state):
        torch.set_flush_denormal(False)
        try:
            fn(state)
        finally:
            torch.set_flush_denormal(True)

    return run, setup


def _subnormal_fields(flushed, unflushed):
    """``unflushed_median_s`` and ``subnormal_slowdown`` (unflushed / flushed) where measured both ways."""
    if unflushed is None:
        return {}
    return {"unflushed_median_s": unflushed, "subnormal_slowdown": unflushed / flushed if flushed else None}


def excluded(row):
    """Whether a row must stay out of verdicts and headlines (contended or implausible)."""
    fl = row["flags"] if "flags" in row else flags(row) if row.get("status") == "ok" else []
    return any(f == "contended" or f.startswith("implausible") for f in fl or [])


def bench_group(case, pass_, backends, device, dtype, tm, peak, seed=0, reps=5, budget_s=20.0, key=None, ftz=False):
    """Time ``pass_`` of ``case`` on every backend that accepts it (plus the ``conv2d-std``
    baselines for DAU, ``baselines.std_variants``), interleaved -> rows.  ``peak``: arithmetic
    ("float32", "tf32", ...) -> ``timing.peaks`` of it (None: no roofline fractions).  ``ftz``: timed
    with flush-to-zero and denormals-are-zero on in the timing thread, and each backend also with them
    off, interleaved with the rest (``_unflushed``): ``unflushed_median_s``, ``subnormal_slowdown``
    and the stall flag (``STALL``).
    Every row records ``ftz`` and ``daz`` as the timing thread had them, and ``origin`` ("ours",
    "peer", "baseline")."""
    meter = machine.Meter()
    start = time.perf_counter()  # the budget bounds the whole group, first calls included
    arrays = case.arrays(seed)
    t = runner.tensors(case, arrays, dtype, device)
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randn(case.out_shape(), generator=gen, dtype=torch.float64).to(runner.DTYPES[dtype]).to(device)
    cost = costmodel.model(case, arrays, pass_)
    nbytes = costmodel.min_bytes(case, pass_, runner.DTYPES[dtype].itemsize)
    per_byte = nbytes / runner.DTYPES[dtype].itemsize  # bytes per element size: scaled for baselines in other dtypes
    base = dict(
        kind="speed",
        layer=case.layer,
        device=str(device),
        dtype=dtype,
        case=case.name,
        group=uuid.uuid4().hex[:12],
        timer=tm.method,
        threads=tm.threads,
        malloc=tm.malloc,
        seed=seed,
        case_fields=case.fields(),
        min_bytes=nbytes,
        key=key,
        vector=env.vector(),
        **cost,
    )
    base["pass"] = pass_
    rows, fns = [], {}
    for b in backends:
        why = impls.BACKENDS[b].refusal(case.layer, torch.device(device), runner.DTYPES[dtype])
        if why:
            rows.append({**base, "backend": b, "status": "skip", "reason": why})
        else:
            fns[b] = _callables(case, b, t, dy, pass_)
    if case.layer == "dau":
        for v in baselines.std_variants(torch.device(device).type, dtype):
            fns[v] = _std_callables(case, cost["standard_side"], t, dy, pass_, seed, v)
    with timing.flush_denormal(ftz):
        modes = env.subnormal_modes()  # as the timing thread has them while timing
        for b in list(fns):
            err = _first_call(tm, *fns[b])
            if err:
                skip = err.startswith(SKIP)
                rows.append(
                    {**base, "backend": b, "status": "skip" if skip else "error", "reason": err.removeprefix(SKIP)}
                )
                del fns[b]
        both = {**fns, **{(b, UNFLUSHED): _unflushed(*fns[b]) for b in fns}} if ftz else fns
        stats = timing.interleaved(tm, both, reps=reps, budget_s=budget_s, start=start) if fns else {}
    unflushed = {k[0]: stats.pop(k).summary()["median_s"] for k in list(stats) if isinstance(k, tuple)}
    med = {b: s.summary()["median_s"] for b, s in stats.items()}
    load = meter.stop()
    spent = budget_use(stats, budget_s, time.perf_counter() - start)
    for row in rows:
        row["load"] = load
        row["budget"] = spent
        row["flags"] = ["contended"] if load["contended"] else []
        row.update(ftz=modes["ftz"], daz=modes["daz"], origin=origin(row["backend"]))
    state = precision.state()
    for b, s in stats.items():
        summ = s.summary()
        macs = _macs(b, cost)
        prec = baselines.precision_of(b, dtype)
        pk = (peak or {}).get(prec)
        size = runner.DTYPES["float32" if prec == "tf32" else prec].itemsize
        # conv2d-std's roofline counts the taps inside the image (costmodel.inside: its padding's may be skipped)
        work = (
            macs * costmodel.inside(cost["standard_side"], case.h, case.w, case.stride)
            if b in baselines.STD_VARIANTS
            else macs
        )
        floor_s = max(work / pk["peak_macs"], per_byte * size / pk["peak_bytes"]) if pk else None
        row = {
            **base,
            "backend": b,
            "status": "ok",
            "reason": "",
            **summ,
            **_speed_fields(b, med, cost),
            "macs": macs,
            "gmacs_per_s": macs / summ["median_s"] / 1e9 if summ["median_s"] else None,
            "roofline_fraction": floor_s / summ["median_s"] if floor_s is not None and summ["median_s"] else None,
            "peak_macs_per_s": pk["peak_macs"] if pk else None,
            "peak_bytes_per_s": pk["peak_bytes"] if pk else None,
            "run_precision": prec,
            "precision": {
                **state,
                "tf32_matmul": state["tf32_matmul"] or prec == "tf32",
                "tf32_conv": state["tf32_conv"] or prec == "tf32",
            },
            "peak_memory_bytes": _peak_memory(*fns[b], device),
            "memory_note": None
            if torch.device(device).type == "cuda"
            else "not measured on CPU: no per-pass allocator statistics",
            "load": load,
            "ftz": modes["ftz"],
            "daz": modes["daz"],
            "origin": origin(b),
            **_subnormal_fields(summ["median_s"], unflushed.get(b)),
            "budget": spent,
        }
        rows.append(row)
    fractions = {r["backend"]: r["roofline_fraction"] for r in rows if r["status"] == "ok"}
    for row in rows:
        if row["status"] == "ok":
            row["baseline_roofline"] = {b: fractions[b] for b in row["speedups"] if fractions[b] is not None}
            row["flags"] = flags(row)
    return rows


def budget_use(stats, budget_s, spent_s):
    """How a group used its budget -> dict (every row's ``budget``): ``budget_s``, ``spent_s``,
    ``reps`` (repetitions kept), ``over`` (spent more than the budget: its minimum of
    ``timing.MIN_REPS`` repetitions did not fit) and ``slowest`` / ``slowest_call_s`` (the backend
    whose one call is longest, what made it overrun)."""
    slow = max(stats.items(), key=lambda kv: max(kv[1].samples, default=0.0), default=(None, None))
    return {
        "budget_s": budget_s,
        "spent_s": spent_s,
        "reps": min((len(s.samples) for s in stats.values()), default=0),
        "over": budget_s is not None and spent_s > budget_s,
        "slowest": slow[0],
        "slowest_call_s": max(slow[1].samples, default=None) if slow[1] else None,
    }


@dataclass
class Sweep:
    """What ``sweep`` did: ``rows`` (every current row of the asked groups, reused ones included),
    ``measured`` and ``reused`` group counts, ``why`` (reason -> count of groups measured again),
    ``left`` (groups not measured because the deadline came first), ``reused_contended`` (reused
    groups flagged contended: said, never silently taken)."""

    rows: list = field(default_factory=list)
    measured: int = 0
    reused: int = 0
    why: Counter = field(default_factory=Counter)
    left: int = 0
    reused_contended: int = 0

    def summary(self):
        """One line: how many groups were reused (and how many of those were contended), measured,
        and why some were measured again."""
        s = f"{self.reused} group(s) reused, {self.measured} measured"
        if self.why:
            s += " (" + ", ".join(f"{n} {w}" for w, n in sorted(self.why.items())) + ")"
        if self.reused_contended:
            s += (
                f"; {self.reused_contended} of the reused group(s) were contended (kept out of the verdict; "
                "--retry-contended measures them again)"
            )
        if self.left:
            s += f", {self.left} left unmeasured at the deadline"
        return s


def precisions(device, dtype, cases):
    """The arithmetics whose peaks a sweep needs: the group's dtype and its conv2d-std variants'."""
    out = {dtype}
    if any(c.layer == "dau" for c in cases):
        out |= {baselines.precision_of(v, dtype) for v in baselines.std_variants(torch.device(device).type, dtype)}
    return sorted(out)


def promised(layer, key):
    """Backends and baselines a group of ``layer`` measured under ``key`` has a row for (ok, skip
    or error): every backend asked for, and for DAU the conv2d-std baselines of its device and dtype."""
    out = set(key["backends"])
    if layer == "dau":
        out |= set(baselines.std_variants(torch.device(key["device"]).type, key["dtype"]))
    return out


def predicted_cost(case, pass_, backends, device, dtype, seed=0):
    """A group's predicted cost for ``eta``: the MACs of every backend that may run it (the
    efficient algorithm's, torch-naive's dense kernel) and of the conv2d-std baselines of DAU,
    from ``costmodel.model`` (what the speed rows report).  Only its ratio between groups matters."""
    cost = costmodel.model(case, case.arrays(seed), pass_)
    n_eff = sum(b != BASELINE for b in backends)
    total = cost["macs_naive"] + n_eff * cost["macs_efficient"]
    if case.layer == "dau":
        total += len(baselines.std_variants(torch.device(device).type, dtype)) * (cost["macs_std"] or 0)
    return max(total, 1)


def _why(old, key, retry_contended):
    """Why an existing group cannot be reused under ``key`` -> reason, or None to reuse it."""
    k = old[0].get("key")
    if not k:
        return "measured again: no key (rows from an older harness)"
    diff = sorted(f for f in key if k.get(f, False if f == "ftz" else None) != key[f])
    if diff:
        return "measured again: other " + "/".join(diff)
    missing = promised(old[0]["layer"], key) - {r["backend"] for r in old}
    if missing:
        return "measured again: incomplete (no row for " + ", ".join(sorted(missing)) + ")"
    if retry_contended and any("contended" in (r.get("flags") or []) for r in old):
        return "measured again: was contended"
    return None


def _existing(path):
    """slot -> rows of the last group measured for it in ``path``."""
    last = {}
    if os.path.exists(path):
        for r in results.load([path]):
            if r.get("kind") == "speed":
                g = last.setdefault(_row_slot(r), {})
                g.setdefault(r.get("group"), []).append(r)
    return {slot: list(groups.values())[-1] for slot, groups in last.items()}


def _retire(path, slot, group):
    """Move rows of ``slot`` not in ``group`` from ``path`` to ``SUPERSEDED`` beside it."""
    keep, old, envs = [], [], {}
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            line = line if line.endswith("\n") else line + "\n"
            r = json.loads(line)
            if r.get("kind") == results.ENV:
                envs[r.get("env_id")] = line
            stale = r.get("kind") == "speed" and _row_slot(r) == slot and r.get("group") != group
            if stale and r.get("env_id") in envs and envs[r["env_id"]] not in old:
                old.append(envs[r["env_id"]])  # the superseded file holds the environment its rows name
            (old if stale else keep).append(line)
    if old:
        with open(os.path.join(os.path.dirname(path), SUPERSEDED), "a") as fh:
            fh.writelines(old)
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            fh.writelines(keep)
        os.replace(tmp, path)


def sweep(
    cases,
    backends,
    device,
    dtype,
    out_dir,
    seed=0,
    reps=5,
    threads=None,
    progress=None,
    budget_s=20.0,
    require_quiet=None,
    retry_contended=False,
    deadline=None,
    shard=None,
    ftz=False,
):
    """Measure every (case, pass) group not already in ``out_dir/bench.jsonl`` under the same key,
    appending rows as each group finishes -> ``Sweep``.

    ``shard = (i, n)``: only the groups of share ``i`` of ``n`` (``in_shard``), so ``n`` machines with the
    same arguments and ``i = 1..n`` measure the grid once between them (``rfbench report`` merges the folders).

    ``progress(i, total, rows)`` is called after each measured group; ``require_quiet`` (seconds)
    waits before each group until the machine is quiet, raising ``NotQuiet`` after that long;
    ``deadline`` (``time.monotonic()`` seconds) stops before the first group that would start
    after it (``Sweep.left`` counts what was left); ``ftz``: see ``bench_group``.  TF32 is off and,
    on CUDA, cuDNN's autotuner on for the whole sweep (``precision``).
    """
    on_cuda = torch.device(device).type == "cuda"
    with precision.exact_fp32(), precision.cudnn_benchmark(on_cuda):
        return _sweep(
            cases,
            backends,
            device,
            dtype,
            out_dir,
            seed,
            reps,
            threads,
            progress,
            budget_s,
            require_quiet,
            retry_contended,
            deadline,
            shard,
            ftz,
        )


def in_shard(index, shard):
    """Whether group ``index`` (0-based, in the grid's order: each case's passes, case after case) is in
    ``shard = (i, n)`` (None: every group). Round-robin, so the ``n`` shares are disjoint, cover every
    group, differ in size by at most one, and do not depend on the machine or on earlier runs."""
    return shard is None or index % shard[1] == shard[0] - 1


def _sweep(
    cases,
    backends,
    device,
    dtype,
    out_dir,
    seed,
    reps,
    threads,
    progress,
    budget_s,
    require_quiet,
    retry_contended,
    deadline,
    shard=None,
    ftz=False,
):
    path = os.path.join(out_dir, RESULTS)
    results.repair(path, say=lambda msg: print(msg, flush=True))
    old = _existing(path)
    tm = timing.timer(device, threads)
    out = Sweep()
    todo, current = [], {}  # current: slot -> rows, in grid order
    groups = [(c, p) for c in cases for p in costmodel.PASSES]
    for c, p in (g for j, g in enumerate(groups) if in_shard(j, shard)):
        key = group_key(c, p, backends, device, dtype, tm.threads, reps, budget_s, seed, ftz)
        slot = _slot(c.layer, c.name, p, device, dtype)
        prev = old.get(slot)
        why = _why(prev, key, retry_contended) if prev else "new"
        current[slot] = prev if why is None else []
        if why is None:
            out.reused += 1
            out.reused_contended += any("contended" in (r.get("flags") or []) for r in prev)
        else:
            out.why[why] += 1
            todo.append((c, p, key))
    peak = None
    if todo and deadline is not None and time.monotonic() > deadline:  # no probe for groups that cannot start
        out.left, todo = len(todo), []
    if todo:
        peak = timing.peaks(device, tuple(precisions(device, dtype, [c for c, _, _ in todo])), tm.threads)
    est = eta.Eta([predicted_cost(c, p, backends, device, dtype, seed) for c, p, _ in todo], budget_s)
    if todo and hasattr(progress, "begin"):
        progress.begin(len(todo), est.bound())
    for i, (case, pass_, key) in enumerate(todo):
        if deadline is not None and time.monotonic() > deadline:
            out.left = len(todo) - i
            break
        t_group = time.monotonic()
        if require_quiet is not None:
            ok, seen = machine.wait_until_quiet(tm.threads, require_quiet)
            if not ok:
                raise machine.NotQuiet(f"the machine stayed busy for {require_quiet:g} s ({seen})")
        group = bench_group(case, pass_, backends, device, dtype, tm, peak, seed, reps, budget_s, key, ftz)
        results.append(path, group)
        slot = _slot(case.layer, case.name, pass_, device, dtype)
        _retire(path, slot, group[0]["group"])
        current[slot] = group
        out.measured += 1
        est.record(time.monotonic() - t_group)
        if getattr(progress, "estimates", False):
            progress(i + 1, len(todo), group, est.left())
        elif progress:
            progress(i + 1, len(todo), group)
    out.rows = [r for rows in current.values() for r in rows]
    return out


def _num(v, p=2):
    return "-" if v is None else f"{v:.{p}f}"


def format_table(rows):
    """Speed rows -> a plain-text table: case, backend, pass, median, speed-ups, gammas, flags.
    A figure flagged implausible is not printed (``!``), a contended row is marked ``c``."""
    head = (
        f"{'case':<20} {'pass':<16} {'backend':<11} {'median':>10} {'p10-p90':>17} {'vs naive':>8} "
        f"{'vs std':>7} {'paper g':>7} {'model g':>7} {'meas/g':>6} {'GMAC/s':>7} {'roofl.':>6}  flags"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r["layer"] + "-" + r["case"]
        if r.get("status") != "ok":
            lines.append(f"{name:<20} {r['pass']:<16} {r['backend']:<11} {r['status']}: {r['reason']}")
            continue
        fl = r.get("flags") or []
        bad = " ".join(fl)
        ups = r.get("speedups") or {}

        def shown(v, what, p=2, fl=fl):
            return "!" if any(f.startswith("implausible") and what in f for f in fl) else _num(v, p)

        spread = f"{r['p10_s'] * 1e3:.1f}-{r['p90_s'] * 1e3:.1f}ms"
        mark = "c" if "contended" in fl else ("*" if r.get("noisy") else " ")
        lines.append(
            f"{name:<20} {r['pass']:<16} {r['backend']:<11} {r['median_s'] * 1e3:>8.2f}ms{mark}{spread:>17} "
            f"{shown(ups.get(BASELINE), 'over ' + BASELINE):>8} {shown(ups.get(STD), 'over ' + STD):>7} "
            f"{_num(r['paper_gamma']):>7} {_num(r['model_gamma']):>7} {_num(r.get('measured_over_model_gamma')):>6} "
            f"{_num(r['gmacs_per_s'], 1):>7} {shown(r['roofline_fraction'], 'roofline', 3):>6}  {bad}"
        )
    lines.append(
        "* IQR/median above 10%: noisy.  c: contended (threads waited on a run queue).  !: impossible figure "
        "(roofline fraction > 1 or speed-up > model gamma), a measurement error, not a result.  "
        "meas/g = speed-up over torch-naive / model gamma."
    )
    return "\n".join(lines)


def contended_groups(rows):
    """-> (contended, total): groups of speed rows flagged contended, and all groups that ran."""
    groups = {}
    for r in rows:
        if r.get("kind") == "speed" and r.get("status") == "ok":
            groups.setdefault(r.get("group"), False)
            groups[r.get("group")] |= "contended" in (r.get("flags") or [])
    return sum(groups.values()), len(groups)


NO_SPEED_RESULT = (
    "NO SPEED RESULT: all {n} group(s) were contended (other work took the cores while they ran), so no "
    "speed-up can be judged. Next: rerun with --threads 1 (fewer threads than busy cores), add "
    "--retry-contended to measure the contended groups again, or --require-quiet SECONDS to wait for a quiet "
    "machine before each group (same --out: finished groups are kept)"
)
