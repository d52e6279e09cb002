"""Compile a small network of all four layers with ``torch.compile(fullgraph=True)`` and compare it with eager.

Run in a fresh process (the state of Dynamo and of the backends' caches is that of a new user):

    python -m suites.compile_probe --backend numba --compiler inductor

Prints one JSON line: the backend, the compiler, the seconds the first compiled call took (compile included),
the largest relative difference from eager of the output and of every parameter gradient, the number of
graphs Dynamo made and of graph breaks, every warning (under the default filters) and torch log line of
level WARNING, and everything written to the process's stderr (file descriptor 2, so also by C++ code and
child processes), from the import of the layers to the last compiled call.

Before that window, the probe loads what the compiler loads about the machine: a CUDA build of torch on a
machine without a GPU prints ``No CUDA runtime is found, using CUDA_HOME=...`` when inductor's C++ tooling
(``torch.utils.cpp_extension``) is imported; that line is about the installation, not about the layers.
"""

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings

import torch


def model(rn, backend, dtype):
    """DAUConv2d -> ReLU -> DAUGaussConv2d -> ACUConv2d (stride 2) -> NJetConv2d, 3 -> 4 channels, learned sigmas
    (``rn``: ``rfbench.nn``)."""
    kw = {"backend": backend, "dtype": dtype}
    return torch.nn.Sequential(
        rn.DAUConv2d(3, 6, units=2, learn_sigma=True, **kw),
        torch.nn.ReLU(),
        rn.DAUGaussConv2d(6, 6, units=2, **kw),
        rn.ACUConv2d(6, 5, stride=2, **kw),
        rn.NJetConv2d(5, 4, order=2, **kw),
    )


def step(m, x):
    """Output and every parameter gradient of ``sum(y^2)``."""
    m.zero_grad()
    y = m(x)
    y.square().sum().backward()
    return [y.detach()] + [p.grad.clone() for p in m.parameters()]


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(torch.finfo(b.dtype).tiny))


@contextlib.contextmanager
def stderr_fd(into):
    """Everything written to file descriptor 2 meanwhile -> ``into[0]`` (text)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            into[0] = tmp.read().decode(errors="replace")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", required=True)
    ap.add_argument("--compiler", default="inductor")
    ap.add_argument("--change-sigma", action="store_true", help="second compiled call after sigma changed the radii")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if args.compiler == "inductor":
        from torch.utils import cpp_extension  # noqa: F401  (what it prints is about the machine: module doc)
    dtype = torch.float64  # every CPU backend has it; compiled and eager then differ only by reordered sums
    x = torch.randn(2, 3, 11, 9, dtype=dtype)
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setLevel(logging.WARNING)
    logging.getLogger("torch").addHandler(handler)
    from torch._dynamo.utils import counters

    stderr = [""]
    # the default warning filters: what a user would see
    with stderr_fd(stderr), warnings.catch_warnings(record=True) as caught:
        from rfbench.impls import nn as rn

        m = model(rn, args.backend, dtype)
        c = torch.compile(m, backend=args.compiler, fullgraph=True)
        t0 = time.perf_counter()
        got = step(c, x)
        seconds = time.perf_counter() - t0
        want = step(m, x)
        errs = [rel(g, w) for g, w in zip(got, want)]
        if args.change_sigma:  # the radii of dau (ceil 3 sigma) and njet (ceil 2 sigma) grow
            with torch.no_grad():
                m[0].log_sigma.fill_(0.7)
                m[4].log_sigma.fill_(0.9)
            got, want = step(c, x), step(m, x)
            errs += [rel(g, w) for g, w in zip(got, want)]
    out = {
        "backend": args.backend,
        "compiler": args.compiler,
        "first_call_s": round(seconds, 1),
        "max_rel_err": max(errs),
        "graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught] + log.getvalue().splitlines(),
        "stderr": stderr[0],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
