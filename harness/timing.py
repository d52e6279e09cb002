"""Timers: one per device, interleaved across the implementations being compared.

CPU: ``time.perf_counter`` around the call; the thread count of torch and numba fixed
(``threads``), checked before every timed call and recorded.
CUDA: events on the current stream, an L2 flush (not timed) before each repetition,
synchronisation before reading.  Warm-up by count and by time; raw samples kept; statistics
are the median, p10, p90 and IQR/median, flagged when the IQR exceeds 10% of the median.

Thread pools (measured, see ``thread_env``): torch's bundled libgomp and the system libgomp
that numba's ``omp`` layer loads are two OpenMP pools in one process.  With the default
(active) wait policy their workers spin at barriers; when more threads are runnable than
cores, torch-fast's many short parallel regions wait for descheduled partners.  The fix is
set in the environment before torch and numba are imported: ``harness.machine.thread_env``.
"""

import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import machine
from .eta import MIN_REPS

NOISY = 0.10  # IQR / median above which a measurement is flagged


@dataclass
class Stats:
    samples: list = field(default_factory=list)  # seconds, wall
    cpu: list = field(default_factory=list)  # seconds of process CPU time per sample (CPU timer only)

    def summary(self):
        s = np.asarray(self.samples, dtype=np.float64)
        if s.size == 0:
            return {"median_s": None, "p10_s": None, "p90_s": None, "iqr_rel": None, "noisy": None, "samples_s": []}
        med = float(np.median(s))
        iqr = float(np.percentile(s, 75) - np.percentile(s, 25))
        return {
            "cpu_median_s": float(np.median(self.cpu)) if self.cpu else None,
            "cpu_samples_s": [float(v) for v in self.cpu],
            "median_s": med,
            "p10_s": float(np.percentile(s, 10)),
            "p90_s": float(np.percentile(s, 90)),
            "iqr_rel": iqr / med if med > 0 else None,
            "noisy": bool(med > 0 and iqr / med > NOISY),
            "samples_s": [float(v) for v in s],
        }


class ThreadDrift(RuntimeError):
    """A library's thread count is not the one the run fixed."""


def _numba():
    """numba, imported now so that its pool starts with our thread count, or None if absent."""
    try:
        import numba
    except ImportError:
        return None
    return numba


def hold_threads(threads):
    """Set torch's and numba's thread counts to ``threads`` (numba before its pool first runs:
    starting the ``omp`` pool calls ``omp_set_num_threads`` with numba's count, which also
    resets torch's when the two share a libgomp)."""
    nb = _numba()
    if nb is not None:
        if threads > nb.config.NUMBA_NUM_THREADS:
            raise ThreadDrift(
                f"threads: numba was started with NUMBA_NUM_THREADS={nb.config.NUMBA_NUM_THREADS}, "
                f"fewer than the {threads} asked for; set it before numba is imported"
            )
        nb.set_num_threads(threads)
    torch.set_num_threads(threads)


def thread_counts():
    """-> {"torch": n, "numba": n or None} as the libraries report them now."""
    nb = sys.modules.get("numba")
    return {"torch": torch.get_num_threads(), "numba": nb.get_num_threads() if nb is not None else None}


def check_threads(threads):
    """Raise ``ThreadDrift`` unless torch and numba (if loaded) both run ``threads`` threads."""
    got = thread_counts()
    bad = {k: v for k, v in got.items() if v is not None and v != threads}
    if bad:
        raise ThreadDrift(f"threads: expected {threads} for every backend, found {bad}")


class CpuTimer:
    method = "perf_counter"

    def __init__(self, threads=None, malloc=True):
        self.threads = threads or torch.get_num_threads()
        hold_threads(self.threads)
        self.malloc = machine.fix_malloc() if malloc else None
        self.last_cpu = None

    def time(self, fn, setup=None):
        """Seconds of one ``fn(state)`` call, ``state = setup()`` untimed; thread counts checked first.
        ``last_cpu``: the process CPU time of the call (with passive OpenMP waits, the work done:
        unlike wall time it hardly moves when other processes take the cores)."""
        state = setup() if setup else None
        check_threads(self.threads)
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn(state)
        t1 = time.perf_counter()
        self.last_cpu = time.process_time() - c0
        return t1 - t0


class CudaTimer:
    method = "cuda-events"

    malloc = None
    last_cpu = None

    def __init__(self, threads=None, flush_mb=512):
        self.threads = threads or torch.get_num_threads()
        hold_threads(self.threads)  # host-side work (setup, autograd bookkeeping) runs on these
        self.flush = torch.empty(flush_mb * 2**20 // 4, dtype=torch.float32, device="cuda")

    def time(self, fn, setup=None):
        state = setup() if setup else None
        self.flush.zero_()  # evict the L2 (not timed)
        stream = torch.cuda.current_stream()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        fn(state)
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def timer(device, threads=None, malloc=True):
    """The timer of ``device`` on ``threads`` threads; ``malloc=False`` leaves glibc's dynamic
    thresholds (``machine.fix_malloc``) as they are, to see what they do."""
    return CudaTimer(threads) if torch.device(device).type == "cuda" else CpuTimer(threads, malloc)


def interleaved(tm, fns, reps=5, warmup=2, warmup_s=0.2, budget_s=None, start=None):
    """Time each of ``fns`` (name -> ``(fn, setup)``) ``reps`` times, interleaved A B C A B C.

    Warm-up: at least ``warmup`` calls each and ``warmup_s`` seconds in all (compilation and
    autotuning land there), cut to one round once the budget is spent.  ``budget_s`` is a bound on
    the whole group, counted from ``start`` (``time.perf_counter()``; default: now, so the caller's
    untimed first calls count when it passes its own start): no repetition round starts that would
    end past it, except to reach ``MIN_REPS``; a group whose minimum is longer than the budget
    overruns it, and its rows say so (``bench``'s ``budget`` field).  -> name -> ``Stats``.
    """
    t0 = time.perf_counter()
    start = t0 if start is None else start
    spent = lambda: time.perf_counter() - start  # noqa: E731
    i = 0
    while i < warmup or time.perf_counter() - t0 < warmup_s:
        for fn, setup in fns.values():
            tm.time(fn, setup)
        i += 1
        if i >= 50 or (budget_s is not None and spent() > budget_s):
            break
    stats = {name: Stats() for name in fns}
    for r in range(reps):
        t_round = time.perf_counter()
        for name, (fn, setup) in fns.items():
            stats[name].samples.append(tm.time(fn, setup))
            if tm.last_cpu is not None:
                stats[name].cpu.append(tm.last_cpu)
        last = time.perf_counter() - t_round
        if budget_s is not None and r + 1 >= MIN_REPS and spent() + last > budget_s:
            break
    return stats


def _measure_peaks(device, arith, threads=None):
    """Best MAC/s of square matrix products of a few sizes and of an unpadded conv2d, and bytes/s of a
    large copy (read + write) in ``arith``: a dtype name, or "tf32" (float32 data, TF32 matrix products)."""
    from . import precision

    with precision.fp32(arith == "tf32"):
        return _measure(device, getattr(torch, "float32" if arith == "tf32" else arith), threads)


# The probe's conv2d: the DAU paper's 9 x 9 standard conv (N 8, S 64, F 192, 32 x 32 out) without
# padding, so every MAC counted is done.  torch's CPU matrix product is MKL's, its conv2d oneDNN's:
# on an AMD EPYC (AVX-512, one thread) MKL's best product ran at 50 GMAC/s and this conv at 54-56,
# so a probe of products alone read conv2d-std above the machine's peak.
CONV_PROBE = (8, 64, 192, 40, 9)  # N, S, F, input side, kernel side


def _measure(device, dtype, threads):
    tm = timer(device, threads)
    sizes = (4096, 8192) if torch.device(device).type == "cuda" else (1024, 2048)
    fns = {}
    for n in sizes:
        a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
        fns[n] = (lambda _, a=a, b=b: torch.mm(a, b), None)
    cn, cs, cf, side, k = CONV_PROBE
    cx = torch.randn(cn, cs, side, side, dtype=dtype, device=device)
    cw = torch.randn(cf, cs, k, k, dtype=dtype, device=device)
    fns["conv"] = (lambda _: torch.nn.functional.conv2d(cx, cw), None)
    src = torch.empty(2**26, dtype=dtype, device=device).normal_()
    dst = torch.empty_like(src)
    fns["copy"] = (lambda _: dst.copy_(src), None)
    st = interleaved(tm, fns, reps=7, warmup=2, warmup_s=0.2)
    conv_macs = cn * cf * cs * (side - k + 1) ** 2 * k * k
    macs = max([n**3 / min(st[n].samples) for n in sizes] + [conv_macs / min(st["conv"].samples)])  # best runs
    return {"peak_macs": macs, "peak_bytes": 2 * src.numel() * src.element_size() / min(st["copy"].samples)}


@functools.lru_cache(maxsize=None)
def peaks(device, ariths=("float32",), threads=None):
    """Measured peaks of this device in this run, once per process, for each arithmetic of
    ``ariths`` (a dtype name, or "tf32": float32 with TF32 matrix products; "float32" runs with
    TF32 off): MAC/s of the best of square matrix products of a few sizes and an unpadded conv2d
    (``CONV_PROBE``), and bytes/s of a large
    copy (read + write), on ``threads`` threads (the child gets
    ``harness.machine.thread_env(threads)``).  A kernel can beat this probe by a few percent (its
    roofline fraction then reads above 1).

    Measured in one child process: the probe's 0.5 GB of buffers left the parent's allocator in a
    state that made torch-fast's DAU forward 3.7x slower for the rest of a CPU sweep.
    -> ``{arith: {"peak_macs": ..., "peak_bytes": ...}}``"""
    names = [str(a).rsplit(".", 1)[-1] for a in ariths]
    code = (
        f"import json, torch; from {__package__}.timing import _measure_peaks; "
        f"print(json.dumps({{a: _measure_peaks({str(device)!r}, a, {threads!r}) for a in {names!r}}}))"
    )
    env = machine.child_env({**os.environ, **(machine.thread_env(threads) if threads else {})})
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=machine.package_root(), env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


class flush_denormal:
    """Flush-to-zero and denormals-are-zero on (``on``) or off in the calling thread while inside
    (``torch.set_flush_denormal``: the x86 MXCSR, per thread), the previous setting restored after.
    With one thread torch and numba compute in the calling thread; worker threads keep their own."""

    def __init__(self, on):
        self.on = bool(on)

    def __enter__(self):
        from .env import subnormal_modes

        self.old = subnormal_modes()["ftz"]
        if not torch.set_flush_denormal(self.on) and self.on:
            raise RuntimeError("flush-to-zero: this CPU cannot flush denormals (torch.set_flush_denormal)")
        return self

    def __exit__(self, *exc):
        torch.set_flush_denormal(self.old)
