"""The machine while measuring: cores, the thread environment, and the load around a group.

Imports neither torch nor numba: the thread environment only works when it is set before
they are first imported (``harness.cli`` sets it before anything else).

Contention is measured, not guessed from the load average alone: Linux counts, per thread,
the time it was runnable but waiting on a run queue (``/proc/self/task/*/schedstat``).  The
share of our threads' runnable time spent waiting is 0 on an idle machine and grows with
every runnable thread beyond the cores (1/3 for our 2 threads plus one busy process on
2 cores).  Without schedstat the 1-minute load average is the fallback.
"""

import ctypes
import functools
import glob
import os
import platform
import sys
import time

# A group is contended when its threads waited on a run queue for more than this share of their
# runnable time: each thread lost over 5% of its time to others.  Fair sharing gives 1/3 for one
# busy process beside our 2 threads on 2 cores, 1/17 for one beside 16 on 16; measured on the
# 2-core VM under other jobs' load: 0.5-0.9 per group (at 1 thread cpu/wall read 1 - share).
WAIT_SHARE = 0.05
LOAD_MARGIN = 0.5  # fallback without schedstat: load1 above cores + this


class NotQuiet(RuntimeError):
    """A quiet machine was required and it stayed busy."""


def machine_name():
    """The name result rows are filed under: ``RFBENCH_MACHINE`` if set, else the host name."""
    return os.environ.get("RFBENCH_MACHINE") or platform.node() or "unknown"


def package_root():
    """The folder that holds the ``rfbench`` package (a checkout's root, or site-packages): a child Python
    started there with it on ``PYTHONPATH`` imports the same code as this process."""
    top = sys.modules[__name__.partition(".")[0]]
    return os.path.dirname(os.path.dirname(os.path.abspath(top.__file__)))


def child_env(env=None):
    """``env`` (default ``os.environ``) with ``package_root`` first on ``PYTHONPATH``."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = package_root() + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cores():
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_env(threads):
    """Environment fixing every pool to ``threads`` threads with OpenMP workers that sleep
    at barriers instead of spinning (``OMP_WAIT_POLICY=PASSIVE``): torch's libgomp and
    numba's then do not spin against each other or against other processes.

    Measured (``python -m harness.stability``, dau-paper forward, 2 threads, fresh processes, a
    busy 2-core VM): torch-fast 7.5-9.1 s with the default (spinning) policy, whether numba's
    layer is ``omp`` or ``workqueue``; 0.30-0.58 s passive, torch-naive 0.9-2.7 s either way."""
    n = str(threads)
    return {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "NUMBA_NUM_THREADS": n,
        "OMP_WAIT_POLICY": "PASSIVE",
    }


def apply_thread_env(threads):
    """Set ``thread_env(threads)`` in ``os.environ`` (an ``OMP_WAIT_POLICY`` the user set is
    kept) -> names of the libraries already imported, for which it comes too late."""
    for k, v in thread_env(threads).items():
        if k == "NUMBA_NUM_THREADS" and "numba" in sys.modules:
            # numba read it at import as its pool's size; changing it now makes numba's next config
            # reload raise ("Cannot set NUMBA_NUM_THREADS ... once the threads have been launched").
            # The count is held with numba.set_num_threads (timing.hold_threads) instead.
            continue
        if k == "OMP_WAIT_POLICY":
            os.environ.setdefault(k, v)
        else:
            os.environ[k] = v
    return [m for m in ("torch", "numba") if m in sys.modules]


MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (64-bit)
TRIM_THRESHOLD = 2**30


@functools.lru_cache(maxsize=None)
def fix_malloc():
    """Fix glibc malloc's thresholds for the rest of the process -> a description, or None (not glibc).

    By default glibc serves a block above a *dynamic* threshold with a fresh ``mmap`` (thousands
    of page faults per call) and raises the threshold as such blocks are freed, so whether a
    backend's buffers are reused depends on what ran before it in the process: measured, 0 to
    2600 minor faults per torch-fast paper-case forward, by history; with fixed thresholds ~0.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, MMAP_THRESHOLD) == 1 and libc.mallopt(-1, TRIM_THRESHOLD) == 1  # M_MMAP_, M_TRIM_
    except (OSError, AttributeError):
        return None
    return f"glibc mmap_threshold={MMAP_THRESHOLD >> 20}MiB trim_threshold={TRIM_THRESHOLD >> 20}MiB" if ok else None


def load1():
    """The 1-minute load average, or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _sched():
    """(ns on a CPU, ns waiting on a run queue) summed over this process's threads, or None."""
    run = wait = 0
    paths = glob.glob("/proc/self/task/*/schedstat")
    if not paths:
        return None
    for p in paths:
        try:
            with open(p) as fh:
                a, b, _ = fh.read().split()
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        run, wait = run + int(a), wait + int(b)
    return run, wait


class Meter:
    """Load around one group: ``m = Meter(); ...; m.stop() -> dict`` (the row's ``load``)."""

    def __init__(self):
        self.load1 = load1()
        self.sched = _sched()
        self.cpu = time.process_time()
        self.wall = time.perf_counter()

    def stop(self):
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        out = {"load1_before": self.load1, "load1_after": load1(), "cpu_over_wall": cpu / wall if wall > 0 else None}
        sched = _sched()
        if self.sched is not None and sched is not None:
            run, wait = sched[0] - self.sched[0], sched[1] - self.sched[1]
            share = wait / (run + wait) if run + wait > 0 else 0.0
            out["wait_share"] = share
            out["contended"] = share > WAIT_SHARE
            out["rule"] = f"run-queue wait share {share:.3f} {'>' if out['contended'] else '<='} {WAIT_SHARE}"
        else:
            high = max(v for v in (out["load1_before"], out["load1_after"], 0.0) if v is not None)
            out["wait_share"] = None
            out["contended"] = high > cores() + LOAD_MARGIN
            out["rule"] = f"load1 {high:.2f} {'>' if out['contended'] else '<='} cores {cores()} + {LOAD_MARGIN}"
        return out


def runnable_others(samples=10, interval=0.1):
    """Mean number of runnable threads on the machine besides the one asking (``/proc/loadavg``
    field 4), over ``samples`` readings, or None where there is no such file."""
    seen = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as fh:
                seen.append(int(fh.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(interval)
    return sum(seen) / len(seen)


def quiet(threads):
    """-> (is the machine free for ``threads`` busy threads, a sentence saying what was seen)."""
    others = runnable_others()
    if others is None:
        high = load1() or 0.0
        ok = high + threads <= cores() + LOAD_MARGIN
        return ok, f"load1 {high:.2f} with {threads} thread(s) on {cores()} cores"
    ok = others + threads <= cores() + LOAD_MARGIN
    return ok, f"{others:.1f} other runnable thread(s) with {threads} of ours on {cores()} cores"


def wait_until_quiet(threads, timeout_s, poll_s=5.0, say=None):
    """Poll ``quiet`` until it holds or ``timeout_s`` has passed -> (quiet, last sentence)."""
    t0 = time.monotonic()
    while True:
        ok, why = quiet(threads)
        left = timeout_s - (time.monotonic() - t0)
        if ok or left <= 0:
            return ok, why
        if say:
            say(f"waiting for a quiet machine: {why}")
        time.sleep(min(poll_s, left))


def _busy(seconds):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sum(range(10000))


def contention_demo(rounds=4, spinners=2, seconds=1.0, say=print):
    """The contention rule at work: one busy thread of ours measured by ``Meter``, alternately
    alone and beside ``spinners`` busy processes -> list of (spinners, others, load dict)."""
    import subprocess

    out = []
    for _ in range(rounds):
        for n in (0, spinners):
            procs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(n)]
            try:
                time.sleep(0.3)
                others = runnable_others(5, 0.05)
                m = Meter()
                _busy(seconds)
                load = m.stop()
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            out.append((n, others, load))
            share = "-" if load["wait_share"] is None else f"{load['wait_share']:.3f}"
            if say:
                say(
                    f"{n} spinner(s): {others} other runnable, wait share {share}, "
                    f"cpu/wall {load['cpu_over_wall']:.3f}, contended {load['contended']}"
                )
            time.sleep(0.5)
    return out


if __name__ == "__main__":  # python -m harness.machine: the contention demo
    contention_demo()
