"""Issue 14's four CPU rows, measured side by side at a fixed thread count (a script, not a test):

    PYTHONPATH=$PWD python suites/benchmarks/cpu_limit.py [--threads 1] [--reps 7] [--layers dau,acu,njet]

Paper cases of the ``paper`` grid, float32.  Per pass, the backends run interleaved in one
process (A B C A B C ...), so each repetition gives one ratio over ``torch-naive``; the table
shows the median of those per-repetition ratios, the median time, and GMAC/s counted with the
efficient MACs of ``harness.costmodel`` (naive MACs for ``torch-naive``).  ``uptime``'s load is
printed before and after: on a busy machine the figures are contended.
"""

import argparse
import os
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--layers", default="dau,acu,njet")
    ap.add_argument("--passes", default="forward,backward,forward+backward")
    ap.add_argument("--backends", default="torch-naive,torch-fast,numba")
    a = ap.parse_args()
    os.environ["NUMBA_NUM_THREADS"] = str(a.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    from harness import bench, cases, costmodel, runner

    torch.set_num_threads(a.threads)
    backends = a.backends.split(",")
    print(f"threads {a.threads}; load before: {os.getloadavg()}", flush=True)
    for case in cases.grid("paper", a.layers.split(",")):
        if case.name != "paper":
            continue
        arrays = case.arrays(0)
        t = runner.tensors(case, arrays, "float32", "cpu")
        dy = torch.randn(case.out_shape(), generator=torch.Generator().manual_seed(0))
        for pass_ in a.passes.split(","):
            cost = costmodel.model(case, arrays, pass_)
            fns = {b: bench._callables(case, b, t, dy, pass_) for b in backends}
            for fn, setup in fns.values():  # warm-up: compilation, first-touch pages
                fn(setup() if setup else None)
            times = {b: [] for b in backends}
            for _ in range(a.reps):
                for b, (fn, setup) in fns.items():
                    state = setup() if setup else None
                    t0 = time.perf_counter()
                    fn(state)
                    times[b].append(time.perf_counter() - t0)
            base = times["torch-naive"]
            for b in backends:
                ratio = statistics.median(x / y for x, y in zip(base, times[b]))
                macs = cost["macs_naive"] if b == "torch-naive" else cost["macs_efficient"]
                med = statistics.median(times[b])
                print(
                    f"{case.layer:5s} {pass_:17s} {b:12s} {med * 1e3:9.2f} ms  x{ratio:6.2f}  "
                    f"{macs / med / 1e9:6.2f} GMAC/s  (model gamma {cost['model_gamma']:.2f})",
                    flush=True,
                )
    print(f"load after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
