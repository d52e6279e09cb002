"""Speed sweeps: every case x pass, the backends timed interleaved, one row per measurement.

A (case, pass) group is measured as a whole (all backends interleaved, so the speed-up over
``torch-naive`` is a ratio measured in one run on one machine) and appended to the results
file as soon as it is done: an interrupted sweep keeps every finished group, and rerunning
with the same file measures only the missing groups.
"""

import os
import uuid

import torch

import impls

from . import costmodel, results, runner, timing

BASELINE = "torch-naive"
RESULTS = "bench.jsonl"


def _key(case, device, dtype, pass_):
    return (case.id, str(device), dtype, pass_)


def done_groups(path):
    """Keys of the (case, device, dtype, pass) groups already in the results file."""
    if not os.path.exists(path):
        return set()
    return {
        (r["layer"] + "-" + r["case"], r["device"], r["dtype"], r["pass"])
        for r in results.load([path])
        if r.get("kind") == "speed"
    }


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


def bench_group(case, pass_, backends, device, dtype, tm, peak, seed=0, reps=5, budget_s=20.0):
    """Time ``pass_`` of ``case`` on every backend that accepts it, interleaved -> rows."""
    arrays = case.arrays(seed)
    t = runner.tensors(case, arrays, dtype, device)
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randn(case.out_shape(), generator=gen, dtype=torch.float64).to(runner.DTYPES[dtype]).to(device)
    group = uuid.uuid4().hex[:12]
    cost = costmodel.model(case, arrays, pass_)
    itemsize = runner.DTYPES[dtype].itemsize
    nbytes = costmodel.min_bytes(case, pass_, itemsize)
    base = dict(
        kind="speed",
        layer=case.layer,
        device=str(device),
        dtype=dtype,
        case=case.name,
        group=group,
        timer=tm.method,
        threads=tm.threads,
        seed=seed,
        case_fields=case.fields(),
        min_bytes=nbytes,
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
    stats = timing.interleaved(tm, fns, reps=reps, budget_s=budget_s) if fns else {}
    med = {b: s.summary()["median_s"] for b, s in stats.items()}
    for b, s in stats.items():
        summ = s.summary()
        macs = cost["macs_naive"] if b == BASELINE else cost["macs_efficient"]
        speedup = med[BASELINE] / med[b] if BASELINE in med and med[b] else None
        floor_s = max(macs / peak["peak_macs"], nbytes / peak["peak_bytes"])
        rows.append(
            {
                **base,
                "backend": b,
                "status": "ok",
                "reason": "",
                **summ,
                "speedup": speedup,
                "measured_over_model_gamma": speedup / cost["model_gamma"] if speedup and b != BASELINE else None,
                "measured_over_paper_gamma": speedup / cost["paper_gamma"]
                if speedup and cost["paper_gamma"] and b != BASELINE
                else None,
                "macs": macs,
                "gmacs_per_s": macs / summ["median_s"] / 1e9,
                "roofline_fraction": floor_s / summ["median_s"],
                "peak_macs_per_s": peak["peak_macs"],
                "peak_bytes_per_s": peak["peak_bytes"],
                "peak_memory_bytes": _peak_memory(*fns[b], device),
                "memory_note": None
                if torch.device(device).type == "cuda"
                else "not measured on CPU: no per-pass allocator statistics",
            }
        )
    return rows


def sweep(cases, backends, device, dtype, out_dir, seed=0, reps=5, threads=None, progress=None, budget_s=20.0):
    """Run every missing (case, pass) group, appending rows to ``out_dir/bench.jsonl`` -> all rows of this run."""
    path = os.path.join(out_dir, RESULTS)
    done = done_groups(path)
    todo = [(c, p) for c in cases for p in costmodel.PASSES if _key(c, device, dtype, p) not in done]
    tm = timing.timer(device, threads)
    peak = timing.peaks(device, runner.DTYPES[dtype]) if todo else None
    rows = []
    for i, (case, pass_) in enumerate(todo):
        group = bench_group(case, pass_, backends, device, dtype, tm, peak, seed, reps, budget_s)
        results.append(path, group)
        rows += group
        if progress:
            progress(i + 1, len(todo))
    return rows, len(done)


def format_table(rows):
    """Speed rows -> a plain-text table: case, backend, pass, median, speed-up, gammas."""
    head = (
        f"{'case':<22} {'pass':<16} {'backend':<12} {'median':>10} {'p10-p90':>17} {'speedup':>8} "
        f"{'paper g':>8} {'model g':>8} {'meas/g':>7} {'GMAC/s':>7} {'roofl.':>6}"
    )
    lines = [head, "-" * len(head)]
    f = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        if r.get("status") != "ok":
            lines.append(
                f"{r['layer'] + '-' + r['case']:<22} {r['pass']:<16} {r['backend']:<12} skipped: {r['reason']}"
            )
            continue
        spread = f"{r['p10_s'] * 1e3:.1f}-{r['p90_s'] * 1e3:.1f}ms"
        flag = "*" if r["noisy"] else " "
        lines.append(
            f"{r['layer'] + '-' + r['case']:<22} {r['pass']:<16} {r['backend']:<12} {r['median_s'] * 1e3:>8.2f}ms"
            f"{flag}{spread:>17} {f(r['speedup']):>8} {f(r['paper_gamma']):>8} {f(r['model_gamma']):>8} "
            f"{f(r['measured_over_model_gamma']):>7} {f(r['gmacs_per_s'], 1):>7} {f(r['roofline_fraction'], 3):>6}"
        )
    lines.append("* IQR/median above 10%: noisy.  meas/g = speed-up over torch-naive / model gamma (same pass).")
    return "\n".join(lines)
