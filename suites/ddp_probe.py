"""Two-process DistributedDataParallel run of the four modules (gloo, localhost), for suites/test_distributed.py.

``python suites/ddp_probe.py --out result.json [--backends B ...] [--steps 3] [--timeout 120]``

Each backend trains a float64 model of the four modules (``DAUConv2d -> Tanh -> DAUGaussConv2d ->
ACUConv2d -> NJetConv2d``) for a few SGD steps under DDP, each rank on its half of every batch, with
``rfbench.nn.normalize_position_grads`` applied after the all-reduce. At every step rank 0 also computes,
in the same process:

- ``accumulated``: a copy of the model trained without DDP, the two halves' losses backpropagated one after
  the other, the gradients halved, then normalised. DDP computes ``g0 / 2 + g1 / 2`` (each rank's gradient
  divided by the world size, an exact power-of-two scaling, then one addition, which commutes) and this
  copy ``(g0 + g1) / 2``: the same numbers, and ACU's normalisation is exact under a power-of-two scale.
  So they must agree bit for bit, at every step (the same trajectory).
- ``concatenated``: one process on the whole batch, from the DDP model's parameters of that step: the same
  sums in another order, so equal to rounding.

Rank 0 writes ``{backend: [per step: {"ranks_equal", "accumulated_equal", "concatenated": {parameter:
[max |a - b|, max |b|]}}]}`` to ``--out``. Exit 0 when the run finished (the test judges the numbers), 2 on
a timeout (both processes are ended) or a failed process.
"""

import argparse
import datetime
import gc
import json
import os
import socket
import sys
import time

HALF = 2  # samples per rank
SHAPE = (3, 9, 8)  # channels, height, width of an input


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model(rn, backend):
    import torch

    torch.manual_seed(0)
    kw = {"backend": backend, "dtype": torch.float64}
    return torch.nn.Sequential(
        rn.DAUConv2d(3, 4, units=2, learn_sigma=True, **kw),
        torch.nn.Tanh(),
        rn.DAUGaussConv2d(4, 4, units=2, **kw),
        rn.ACUConv2d(4, 4, synapses=5, init="circle", position_groups=2, **kw),
        rn.NJetConv2d(4, 2, order=2, **kw),
    )


def data(steps):
    import torch

    g = torch.Generator().manual_seed(1)
    x = torch.randn(steps, 2 * HALF, *SHAPE, generator=g, dtype=torch.float64)
    t = torch.randn(steps, 2 * HALF, 2, *SHAPE[1:], generator=g, dtype=torch.float64)
    return x, t


def grads(m):
    return [p.grad.detach().clone() for p in m.parameters()]


def loss(m, x, t):
    return (m(x) - t).square().mean()


def train(rank, backend, steps):
    """-> per-step records on rank 0, None on rank 1."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from rfbench import nn as rn

    x, t = data(steps)
    ddp = DistributedDataParallel(model(rn, backend))
    names = [n for n, _ in ddp.module.named_parameters()]
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    if rank == 0:
        acc, full = model(rn, backend), model(rn, backend)
        acc.load_state_dict(ddp.module.state_dict())
        opt_acc = torch.optim.SGD(acc.parameters(), lr=0.05)
    out = []
    for k in range(steps):
        mine = slice(rank * HALF, (rank + 1) * HALF)
        opt.zero_grad()
        loss(ddp, x[k, mine], t[k, mine]).backward()
        rn.normalize_position_grads(ddp)
        g = torch.cat([v.flatten() for v in grads(ddp)])
        both = [torch.empty_like(g) for _ in range(2)]
        dist.all_gather(both, g)
        if rank == 0:
            opt_acc.zero_grad()
            for h in range(2):
                part = slice(h * HALF, (h + 1) * HALF)
                loss(acc, x[k, part], t[k, part]).backward()
            with torch.no_grad():
                for p in acc.parameters():
                    p.grad.mul_(0.5)
            rn.normalize_position_grads(acc)
            full.load_state_dict(ddp.module.state_dict())
            full.zero_grad()
            loss(full, x[k], t[k]).backward()
            rn.normalize_position_grads(full)
            mine_g = grads(ddp.module)
            out.append(
                {
                    "ranks_equal": bool(torch.equal(both[0], both[1])),
                    "accumulated_equal": all(torch.equal(a, b) for a, b in zip(grads(acc), mine_g)),
                    "concatenated": {
                        n: [float((a - b).abs().max()), float(b.abs().max())]
                        for n, a, b in zip(names, mine_g, grads(full))
                    },
                }
            )
            opt_acc.step()
        opt.step()
    return out if rank == 0 else None


def worker(rank, port, backends, steps, path):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        res = {b: train(rank, b, steps) for b in backends}
        dist.barrier()  # rank 1 would otherwise tear down while rank 0 still checks its last step
    finally:
        # DDP's reducer holds the process group in reference cycles; collect them, then destroy the group,
        # then collect again, so that gloo's worker threads are joined while the interpreter is alive.
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
    if rank == 0:
        with open(path, "w") as fh:
            json.dump(res, fh)
    # End without interpreter finalization: a C++ thread of torch that drops a tensor's last Python reference
    # during finalization takes the GIL, CPython ends that thread with pthread_exit, whose forced unwind
    # through a noexcept frame aborts the process ("terminate called without an active exception", SIGABRT).
    # Seen once in CI, on rank 1. Everything this process owes is written and closed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file rank 0 writes")
    p.add_argument("--backends", nargs="+", default=["torch-naive"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before both processes are ended")
    args = p.parse_args(argv)
    import torch.multiprocessing as mp

    os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # inherited by the spawned ranks: one thread each
    ctx = mp.start_processes(
        worker,
        args=(free_port(), args.backends, args.steps, args.out),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + args.timeout
    try:
        while not ctx.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                for proc in ctx.processes:
                    proc.kill()
                print(f"ddp_probe: timed out after {args.timeout:g} s; both processes ended", file=sys.stderr)
                return 2
    except mp.ProcessRaisedException as exc:
        print(f"ddp_probe: a process failed:\n{exc}", file=sys.stderr)
        return 2
    except mp.ProcessExitedException as exc:
        print(f"ddp_probe: a process died: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
