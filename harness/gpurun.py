"""``rfbench gpu-run``: a short GPU loan turned into the GPU report, in one command.

A GPU machine may be lent for minutes at a time, with results coming back only as the files of
one folder.  So this driver runs the work in priority order (``STEPS``), each step in a child
process of its own with its own time limit (a crashed CUDA context or a hang loses only that
step), skips a step whose estimate no longer fits the budget and says so, has every row appended
to its file as soon as it exists, and rewrites ``summary.md`` after every step: a run stopped at
any moment returns everything done so far.  The folder then holds at most these 8 files
(``FILES``), and ``rfbench report DIR`` turns it into the report.

``--rehearse`` runs the same driver on the CPU with small cases and the CPU backends that load
at once (``torch-naive``, ``torch-fast``): every part that needs a GPU reports itself skipped,
with the reason, and the rest (child processes, limits, budget, files, summary, report) is the
real thing.  ``suites/test_gpurun.py`` runs it in full, with a budget cut short, and with a step
killed mid-way.

The parent imports neither torch nor pandas: what it does cannot fail with the device.
"""

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

FILES = {
    "env": "env.json",  # the probe: versions, device, TF32 defaults, compile checks
    "steps": "steps.jsonl",  # one row per step: status, seconds, reason
    "matrix": "matrix.jsonl",  # correctness rows (kind "correctness")
    "bench": "bench.jsonl",  # speed rows (kind "speed"), harness.bench
    "extra": "extra.jsonl",  # warm-up, peer, determinism and ncu rows
    "junit": "junit.xml",  # the CUDA tests of suites/
    "log": "log.txt",  # every child's output
    "summary": "summary.md",  # rewritten after every step
}
REHEARSAL_BACKENDS = ("torch-naive", "torch-fast")  # CPU backends that need no compile
MARGIN_S = 5.0  # kept back from each step's limit for the parent's own writing
LOG_LIMIT = 12 * 2**20  # log.txt is cut in the middle above this (the files that come back are capped)


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    estimate_s: float  # expected on an H200
    limit_s: float  # the most it may take (None: whatever the budget has left)
    rehearse_s: float  # expected in the CPU rehearsal


STEPS = (
    Step("probe", "versions, device, cuDNN, TF32 defaults; one numba-cuda and one cupy compile and launch", 30, 120, 8),
    Step("warmup", "every backend x layer x dtype once on a tiny case (compiles every kernel)", 45, 150, 10),
    Step("matrix-smoke", "correctness on CUDA, smoke grid, every backend and dtype", 60, 180, 15),
    Step("bench-paper", "paper-case speed, every backend and layer, all baselines", 90, 240, 25),
    Step("profile", "torch.profiler of the DAU paper case: device time per kernel, launches, host time", 40, 120, 10),
    Step("peers", "ACU against torchvision's deform_conv2d: agreement and speed", 25, 90, 8),
    Step("determinism", "bit-identical float32 outputs and gradients, run to run", 25, 90, 10),
    Step("matrix-default", "correctness on CUDA, the rest of the default grid", 50, 180, 15),
    Step("pytest", "the CUDA tests of suites/ (JUnit XML)", 60, 150, 15),
    Step("ncu", "Nsight Compute metrics of the DAU kernels and conv2d-std", 60, 150, 5),
    Step("bench-sweep", "the rest of the paper sweep, until the budget ends", 30, None, 10),
)
NAMES = tuple(s.name for s in STEPS)


# ---------------------------------------------------------------- the parent


def cuda_backends():
    """Every backend of ours in the registry that runs on CUDA, in the registry's order (the peers are
    measured by their own step, ``peers``)."""
    from ..impls._registry import BACKENDS

    return tuple(name for name, b in BACKENDS.items() if "cuda" in b.devices and b.origin == "ours")


def _append_json(path, row):
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _rows(path):
    """Rows of a JSON-lines file; a torn last line (a child killed while writing) is dropped."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, errors="replace") as fh:
        for line in fh:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict):
                out.append(r)
    return out


def _broken(out):
    """Backends left out of the later steps: every warm-up call failed, or one never returned
    (a ``running`` row without its result: the warm-up was killed inside that backend's call)."""
    seen, running = {}, {}
    for r in _rows(os.path.join(out, FILES["extra"])):
        if r.get("kind") != "warmup":
            continue
        call = (r["backend"], r["layer"], r["dtype"])
        if r.get("status") == "running":
            running[call] = True
        else:
            running.pop(call, None)
            seen.setdefault(r["backend"], []).append(r["status"])
    hung = {b for b, _, _ in running}
    return sorted(hung | {b for b, st in seen.items() if st and all(s == "error" for s in st)})


def _tail(path, start, lines=8):
    with open(path, "rb") as fh:
        fh.seek(start)
        text = fh.read().decode(errors="replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def _cap_log(path):
    """Keep log.txt under ``LOG_LIMIT``: the first and last halves, with a line saying what was cut."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if size <= LOG_LIMIT:
        return
    half = LOG_LIMIT // 2
    with open(path, "rb") as fh:
        head = fh.read(half)
        fh.seek(size - half)
        tail = fh.read()
    with open(path, "wb") as fh:
        fh.write(head + f"\n[... {size - 2 * half} bytes of log cut ...]\n".encode() + tail)


def _child(step, out, device, rehearse, deadline, skip, seed, timeout, log):
    """Run one step in its own process group -> (status, rc, seconds)."""
    from .machine import child_env, package_root

    root = package_root()
    cmd = [sys.executable, "-m", f"{__package__}.gpurun", "--child", step.name, "--out", out, "--device", device]
    cmd += ["--deadline", repr(deadline), "--seed", str(seed), "--skip", ",".join(skip) or "-"]
    if rehearse:
        cmd.append("--rehearse")
    env = child_env({**os.environ, "PYTHONUNBUFFERED": "1"})
    t0 = time.monotonic()
    with open(log, "ab") as fh:
        fh.write(f"\n===== step {step.name}: {step.what} (limit {timeout:.0f} s) =====\n".encode())
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else "error"
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc, status = proc.returncode, "timeout"
    return status, rc, time.monotonic() - t0


def _kill(proc):
    """SIGTERM to the step's process group, SIGKILL 3 s later if it is still there."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(out, budget_s, rehearse=False, limits=None, only=None, seed=0, say=print):
    """Run ``STEPS`` (or those named in ``only``) within ``budget_s`` seconds -> exit status
    (0: every step ran and passed, 1: a step failed, timed out or was skipped for time)."""
    os.makedirs(out, exist_ok=True)
    t0 = time.monotonic()
    stop = t0 + budget_s
    device = "cpu" if rehearse else "cuda"
    paths = {k: os.path.join(out, v) for k, v in FILES.items()}
    for k in ("steps", "log"):
        open(paths[k], "a").close()
    done = []
    say(
        f"gpu-run: {'rehearsal on the CPU' if rehearse else 'on CUDA'}, budget {budget_s:.0f} s, "
        f"steps {', '.join(s.name for s in STEPS if not only or s.name in only)}; files in {out}"
    )
    for step in STEPS:
        if only and step.name not in only:
            continue
        left = stop - time.monotonic()
        est = step.rehearse_s if rehearse else step.estimate_s
        limit = (limits or {}).get(step.name, step.limit_s)
        row = {"kind": "step", "step": step.name, "what": step.what, "estimate_s": est, "left_s": round(left, 1)}
        if left - MARGIN_S < est:
            row.update(status="skipped", seconds=0.0, reason=f"estimate {est:.0f} s > {left - MARGIN_S:.0f} s left")
        else:
            timeout = min(limit, left - MARGIN_S) if limit is not None else left - MARGIN_S
            skip = _broken(out)
            start = os.path.getsize(paths["log"])
            deadline = time.time() + timeout - 2.0  # the child stops between units of work before its kill
            status, rc, secs = _child(step, out, device, rehearse, deadline, skip, seed, timeout, paths["log"])
            row.update(status=status, seconds=round(secs, 1), rc=rc, limit_s=round(timeout, 1), left_out=skip)
            row["reason"] = (
                ""
                if status == "ok"
                else (f"killed after {timeout:.0f} s" if status == "timeout" else f"exit status {rc}")
            )
            row["tail"] = _tail(paths["log"], start)
            _cap_log(paths["log"])
        row["elapsed_s"] = round(time.monotonic() - t0, 1)
        _append_json(paths["steps"], row)
        done.append(row)
        write_summary(out, budget_s, rehearse)
        say(
            f"[{row['elapsed_s']:6.1f} s] {step.name:<15} {row['status']:<8} "
            f"{row.get('seconds', 0):6.1f} s  {row['reason']}"
        )
    bad = [r for r in done if r["status"] != "ok"]
    say(f"gpu-run: {len(done) - len(bad)} of {len(done)} steps ok; summary in {paths['summary']}")
    return 1 if bad else 0


# ---------------------------------------------------------------- the summary (plain Python)


def _fmt(v, p=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{p}g}"
    return str(v)


def _table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return lines


def _matrix_lines(rows):
    groups = {}
    for r in rows:
        if r.get("kind") != "correctness":
            continue
        g = groups.setdefault((r["backend"], r["dtype"]), {"pass": set(), "fail": set(), "skip": set(), "worst": 0.0})
        case = (r["layer"], r["case"])
        if r["status"] in ("fail", "error"):
            g["fail"].add(case)
        elif r["status"] == "skip":
            g["skip"].add(case)
        else:
            g["pass"].add(case)
        if isinstance(r.get("bound_ratio"), (int, float)):
            g["worst"] = max(g["worst"], r["bound_ratio"])
    out = []
    for (b, d), g in sorted(groups.items()):
        failed = sorted(g["fail"])
        ok = g["pass"] - g["fail"]
        names = ", ".join(f"{lay}-{c}" for lay, c in failed[:6]) + (" ..." if len(failed) > 6 else "")
        out.append((b, d, len(ok), len(failed), len(g["skip"] - ok - g["fail"]), g["worst"], names or "-"))
    return _table(["backend", "dtype", "cases passed", "failed", "skipped", "worst err/bound", "failed cases"], out)


def _bench_lines(rows):
    out = []
    for r in rows:
        if r.get("kind") != "speed" or r.get("case") != "paper":
            continue
        if r.get("status") != "ok":
            out.append(
                (
                    r["layer"],
                    r["pass"],
                    r["backend"],
                    r["status"],
                    None,
                    None,
                    None,
                    None,
                    None,
                    (r.get("reason") or "")[:80],
                )
            )
            continue
        ups = r.get("speedups") or {}
        mem = r.get("peak_memory_bytes")
        out.append(
            (
                r["layer"],
                r["pass"],
                r["backend"],
                f"{r['median_s'] * 1e6:.1f} us",
                None if mem is None else round(mem / 2**20, 1),
                ups.get("torch-naive"),
                ups.get("conv2d-std"),
                ups.get("conv2d-std-tf32"),
                r.get("measured_over_paper_gamma"),
                " ".join(r.get("flags") or []) or "-",
            )
        )
    head = [
        "layer",
        "pass",
        "backend",
        "median",
        "peak MiB",
        "x naive",
        "x std",
        "x std tf32",
        "x std / paper gamma",
        "flags",
    ]
    return _table(head, out)


def _extra_lines(rows):
    lines = []
    warm = [r for r in rows if r.get("kind") == "warmup" and r.get("status") == "error"]
    if warm:
        lines += ["", "Warm-up errors:"] + [
            f"- {r['backend']} {r['layer']} {r['dtype']}: {r.get('reason', '')[:160]}" for r in warm[:20]
        ]
    peers = [r for r in rows if r.get("kind") == "peer"]
    if peers:
        lines += ["", "ACU against torchvision's deform_conv2d:", ""]
        lines += _table(
            ["backend", "dtype", "status", "forward rel", "grad rel (worst)", "pass", "median", "x over deform_conv2d"],
            [
                (
                    r["backend"],
                    r.get("dtype"),
                    r["status"],
                    r.get("forward_rel"),
                    r.get("grad_rel"),
                    r.get("pass"),
                    None if r.get("median_s") is None else f"{r['median_s'] * 1e6:.1f} us",
                    r.get("speedup"),
                )
                for r in peers
            ],
        )
    det = [r for r in rows if r.get("kind") == "determinism"]
    if det:
        lines += ["", "Run-to-run determinism (float32, bit-identical outputs and gradients):", ""]
        lines += _table(
            ["backend", "layer", "status", "identical", "differs"],
            [
                (r["backend"], r["layer"], r["status"], r.get("identical"), ", ".join(r.get("differs") or []) or "-")
                for r in det
            ],
        )
    prof = [r for r in rows if r.get("kind") == "profile"]
    if prof:
        lines += ["", "Where the DAU paper case's time goes (torch.profiler; per call):", ""]
        lines += _table(
            ["backend", "pass", "wall us", "kernels us", "launches", "largest kernel"],
            [
                (
                    r["backend"],
                    r["pass"],
                    r["wall_us"],
                    r["kernel_us"],
                    r["launches"],
                    f"{r['top'][0][0][:60]} {r['top'][0][1]} us" if r.get("top") else "-",
                )
                for r in prof
            ],
        )
    ncu = [r for r in rows if r.get("kind") == "ncu"]
    if ncu:
        lines += ["", f"Nsight Compute: {len(ncu)} kernel rows (extra.jsonl, kind ncu)."]
    skipped = [r for r in rows if r.get("kind") == "gpurun" and r.get("status") == "skip"]
    if skipped:
        lines += ["", "Parts skipped:"] + [f"- {r['step']}: {r['part']}: {r['reason']}" for r in skipped]
    return lines


def write_summary(out, budget_s, rehearse):
    """Rewrite ``summary.md`` from the files written so far (no torch, no pandas)."""
    p = {k: os.path.join(out, v) for k, v in FILES.items()}
    env = {}
    if os.path.exists(p["env"]):
        try:
            with open(p["env"]) as fh:
                env = json.load(fh)
        except (OSError, json.JSONDecodeError):
            env = {}
    steps = _rows(p["steps"])
    lines = [
        f"# gpu-run {'rehearsal (CPU)' if rehearse else 'on ' + str(env.get('gpu') or 'CUDA')}",
        "",
        f"Budget {budget_s:.0f} s; {steps[-1]['elapsed_s'] if steps else 0:.0f} s used. "
        f"torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, numpy {env.get('numpy')}, "
        f"numba {env.get('numba')}, numba-cuda {env.get('numba-cuda')}, cupy {env.get('cupy')}, "
        f"commit {env.get('git_commit')}. TF32 defaults: matmul {env.get('tf32_matmul')}, "
        f"cuDNN conv {env.get('tf32_cudnn')} (the matrix and FP32 baselines run with TF32 off).",
        "",
        "## Steps",
        "",
    ]
    lines += _table(
        ["step", "status", "seconds", "reason"],
        [(s["step"], s["status"], s.get("seconds"), s["reason"]) for s in steps],
    )
    checks = env.get("checks") or {}
    if checks:
        lines += ["", "Probe checks:"] + [f"- {k}: {v}" for k, v in checks.items()]
    lines += ["", "## Correctness on the device", ""] + _matrix_lines(_rows(p["matrix"]))
    lines += ["", "## Paper-case speed", ""] + _bench_lines(_rows(p["bench"]))
    lines += _extra_lines(_rows(p["extra"]))
    lines += ["", f"Report: `rfbench report {out} --out <dir>`."]
    tmp = p["summary"] + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, p["summary"])


# ---------------------------------------------------------------- the steps (in the child)


@dataclass
class Ctx:
    out: str
    device: str
    rehearse: bool
    deadline: float  # time.time() seconds
    skip: tuple
    seed: int

    def path(self, key):
        return os.path.join(self.out, FILES[key])

    def left(self):
        return self.deadline - time.time()

    def backends(self):
        every = REHEARSAL_BACKENDS if self.rehearse else cuda_backends()
        return [b for b in every if b not in self.skip]

    def note(self, step, part, reason):
        """A part of a step that did not run: a row saying why (and a line in the log)."""
        from . import results

        print(f"{step}: {part} skipped: {reason}")
        results.append(
            self.path("extra"), [{"kind": "gpurun", "step": step, "part": part, "status": "skip", "reason": reason}]
        )


def _dtypes(backend, layer, device):
    import torch

    from .. import impls

    from . import runner

    rec = impls.BACKENDS[backend]
    return [d for d in runner.DTYPES if rec.refusal(layer, torch.device(device), runner.DTYPES[d]) is None]


def _small(case):
    """A rehearsal-sized copy of a speed case (same layer and parameters, tiny tensors; a depthwise case stays
    depthwise, other channel groups become one)."""
    s_, f_ = min(case.s, 4), min(case.f, 8)
    cg = s_ if case.channel_groups == case.s else 1
    return dataclasses.replace(
        case, n=1, s=s_, f=f_ if cg == 1 else s_, h=min(case.h, 12), w=min(case.w, 12), channel_groups=cg
    )


def step_probe(ctx):
    import torch

    from . import env, precision

    info = {**env.environment(), "rehearse": ctx.rehearse, "precision_now": precision.state()}
    from importlib import metadata

    for pkg in ("numba-cuda", "torchvision", "cupy-cuda13x", "cupy-cuda12x", "cuda-python"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    info["ncu"] = shutil.which("ncu")
    info["nvcc"] = _run_text(["nvcc", "--version"]).strip().splitlines()[-1:] if shutil.which("nvcc") else None
    if torch.cuda.is_available():
        pr = torch.cuda.get_device_properties(0)
        info["device"] = {
            "name": pr.name,
            "capability": f"{pr.major}.{pr.minor}",
            "sms": pr.multi_processor_count,
            "memory_gib": round(pr.total_memory / 2**30, 1),
            "l2_mib": round(getattr(pr, "L2_cache_size", 0) / 2**20, 1),
        }
        info["nvidia_smi"] = _run_text(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit",
                "--format=csv",
            ]
        )
    checks = {}
    for name, fn in (("numba-cuda", _check_numba_cuda), ("cupy", _check_cupy)):
        t0 = time.monotonic()
        try:
            checks[name] = fn(ctx) + f" ({time.monotonic() - t0:.1f} s)"
        except Exception as exc:  # a probe reports, it does not stop the run
            checks[name] = f"FAILED: {type(exc).__name__}: {str(exc)[:400]}"
        print(f"probe: {name}: {checks[name]}")
    info["checks"] = checks
    with open(ctx.path("env"), "w") as fh:
        json.dump(info, fh, indent=1, default=str)
    print(json.dumps(info, indent=1, default=str)[:4000])


def _run_text(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{cmd[0]}: {exc}"


def _tiny_dau(device, dtype):
    import torch

    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype).to(device)  # noqa: E731
    return (
        r(2, 3, 9, 8),
        r(4, 3, 2),
        2 * r(4, 3, 2),
        2 * r(4, 3, 2),
        torch.tensor(0.7, dtype=dtype, device=device),
        r(4),
    )


def _agree(a, b):
    import torch

    return (
        float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))
        if torch.isfinite(a).all()
        else float("inf")
    )


def _check_numba_cuda(ctx):
    import torch

    if ctx.rehearse or not torch.cuda.is_available():
        return (
            "skipped: no CUDA device (the PTX compile of every kernel: "
            "suites/test_cuda.py::test_numba_cuda_kernels_compile_to_ptx)"
        )
    from .. import impls

    args = _tiny_dau("cuda", torch.float64)
    y = impls.dau_conv2d(*args, stride=1, blur_radius=3, backend="numba-cuda")
    ref = impls.dau_conv2d(*args, stride=1, blur_radius=3, backend="torch-naive")
    return f"compiled and launched; dau forward float64 vs torch-naive rel. error {_agree(y, ref):.2e}"


def _check_cupy(ctx):
    import torch

    from ..impls.backends.cuda import cupy_prims as cupy_cuda

    if ctx.rehearse or not torch.cuda.is_available():
        times = []
        for m in cupy_cuda.MODULES:
            t0 = time.monotonic()
            try:
                cupy_cuda.nvrtc_compile(m)  # imports NVRTC from cupy (the gpu extra) on first use
            except ImportError:
                return "skipped: no CUDA device, and cupy is not installed for an NVRTC compile without one"
            except OSError as exc:
                return f"skipped: no CUDA device, and {exc}"
            times.append(f"{m} {time.monotonic() - t0:.1f} s")
        return "no CUDA device: NVRTC compile only (sm_90): " + ", ".join(times)
    from .. import impls

    times = []
    for m in cupy_cuda.MODULES:
        t0 = time.monotonic()
        cupy_cuda._module(m, 0)
        times.append(f"{m} {time.monotonic() - t0:.1f} s")
    args = _tiny_dau("cuda", torch.float64)
    y = impls.dau_conv2d(*args, stride=1, blur_radius=3, backend="cupy")
    ref = impls.dau_conv2d(*args, stride=1, blur_radius=3, backend="torch-naive")
    return f"modules {', '.join(times)}; dau forward float64 vs torch-naive rel. error {_agree(y, ref):.2e}"


def step_warmup(ctx):
    import torch

    from . import cases, results, runner

    tiny = {c.layer: c for c in cases.grid("smoke") if c.name == "odd"}
    for b in ctx.backends():
        for layer, case in tiny.items():
            for d in _dtypes(b, layer, ctx.device):
                mark = {"kind": "warmup", "backend": b, "layer": layer, "dtype": d, "device": ctx.device}
                results.append(ctx.path("extra"), [{**mark, "status": "running"}])  # a hang is then seen
                t0 = time.monotonic()
                rows = runner.run_case(case, b, d, ctx.device, ctx.seed)
                if ctx.device == "cuda":
                    torch.cuda.synchronize()
                bad = [r for r in rows if r["status"] in ("error", "fail")]
                row = {
                    "kind": "warmup",
                    "backend": b,
                    "layer": layer,
                    "dtype": d,
                    "device": ctx.device,
                    "status": "error" if any(r["status"] == "error" for r in bad) else "ok",
                    "fails": len([r for r in bad if r["status"] == "fail"]),
                    "seconds": round(time.monotonic() - t0, 3),
                    "reason": (bad[0]["reason"] or "").split("\n")[0][:300] if bad else "",
                }
                results.append(ctx.path("extra"), [row])
                print(f"warmup {b} {layer} {d}: {row['status']} {row['seconds']} s {row['reason']}")
    if ctx.rehearse:
        ctx.note("warmup", "numba-cuda, cupy", "no CUDA device (rehearsal on the CPU)")


def _matrix(ctx, grid):
    from . import results, runner

    n = 0
    for case in grid:
        if ctx.left() < 0:
            print(f"matrix: deadline reached, {len(grid) - n} case(s) left")
            break
        rows = []
        for b in ctx.backends():
            for d in _dtypes(b, case.layer, ctx.device):
                rows += runner.run_case(case, b, d, ctx.device, ctx.seed)
        results.append(ctx.path("matrix"), rows)
        n += 1
        bad = [r for r in rows if r["status"] in ("fail", "error")]
        print(f"matrix {case.id}: {len(rows)} rows, {len(bad)} failed")


def step_matrix_smoke(ctx):
    from . import cases

    grid = cases.grid("smoke")
    if ctx.rehearse:  # two cases per layer
        grid = [c for c in grid if c.name in ("odd", "stride2")]
    _matrix(ctx, grid)


def step_matrix_default(ctx):
    from . import cases

    smoke = {c.id for c in cases.grid("smoke")}
    grid = [c for c in cases.grid("default") if c.id not in smoke]
    if ctx.rehearse:
        grid = [c for c in grid if c.name == "wide-stride2"]
    _matrix(ctx, grid)


def _bench(ctx, grid, budget_s):
    from . import bench

    if ctx.rehearse:
        grid = [_small(c) for c in grid]
    backends = [bench.BASELINE] + [b for b in ctx.backends() if b != bench.BASELINE]
    done = bench.sweep(
        grid,
        backends,
        ctx.device,
        "float32",
        ctx.out,
        seed=ctx.seed,
        reps=5 if ctx.rehearse else 15,
        progress=lambda i, n, rows: print(f"bench {rows[0]['layer']}-{rows[0]['case']} {rows[0]['pass']}: {i}/{n}"),
        budget_s=budget_s,
        deadline=time.monotonic() + ctx.left() - 10.0,  # sweep reads time.monotonic(); ctx holds time.time()
    )
    print(f"bench: {done.summary()}")
    print(bench.format_table(done.rows))


def step_bench_paper(ctx):
    from . import cases

    _bench(ctx, [c for c in cases.grid("paper") if c.name == "paper"], 1.0 if ctx.rehearse else 4.0)


def step_bench_sweep(ctx):
    from . import cases

    grid = [c for c in cases.grid("paper") if c.name != "paper"]
    if ctx.rehearse:
        grid = grid[:2]
    _bench(ctx, grid, 0.5 if ctx.rehearse else 2.0)


def step_profile(ctx):
    """Where the time of the DAU paper case goes, per backend and pass (forward, forward+backward),
    with ``torch.profiler`` (CUPTI on CUDA): the wall time of a call (the harness's timer), the
    device time its kernels add up to, the launches per call, and the kernels that take most of it.
    A wall time far above the kernel time is host overhead (Python glue, launches), not arithmetic."""
    import torch
    from torch.autograd import DeviceType

    from . import bench, cases, costmodel, precision, results, runner, timing

    case = next(c for c in cases.grid("paper") if c.layer == "dau" and c.name == "paper")
    if ctx.rehearse:
        case = _small(case)
    arrays = case.arrays(ctx.seed)
    t = runner.tensors(case, arrays, "float32", ctx.device)
    dy = torch.randn(case.out_shape(), device=ctx.device)
    side = costmodel.standard_side(case, arrays)
    acts = [torch.profiler.ProfilerActivity.CPU]
    if ctx.device == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    tm = timing.timer(ctx.device)
    reps = 5
    with precision.exact_fp32(), precision.cudnn_benchmark(ctx.device == "cuda"):
        for b in ctx.backends() + ["conv2d-std", "conv2d-std-tf32"]:
            for pass_ in ("forward", "forward+backward"):
                if ctx.left() < 0:
                    return
                if b.startswith("conv2d-std"):
                    fn, setup = bench._std_callables(case, side, t, dy, pass_, ctx.seed, b)
                else:
                    fn, setup = bench._callables(case, b, t, dy, pass_)
                for _ in range(3):
                    tm.time(fn, setup)
                wall = sorted(tm.time(fn, setup) for _ in range(reps))[reps // 2]
                with torch.profiler.profile(activities=acts) as prof:
                    for _ in range(reps):
                        fn(None)
                    if ctx.device == "cuda":
                        torch.cuda.synchronize()
                kern = {}
                for e in prof.events():
                    if e.device_type == DeviceType.CUDA:
                        k = kern.setdefault(e.name, [0.0, 0.0])
                        k[0] += e.time_range.elapsed_us() / reps
                        k[1] += 1 / reps
                top = sorted(kern.items(), key=lambda kv: -kv[1][0])[:8]
                row = {
                    "kind": "profile",
                    "backend": b,
                    "layer": case.layer,
                    "case": case.name,
                    "pass": pass_,
                    "device": ctx.device,
                    "wall_us": wall * 1e6,
                    "kernel_us": sum(v[0] for v in kern.values()),
                    "launches": sum(v[1] for v in kern.values()),
                    "top": [[n[:120], round(v[0], 2), round(v[1], 2)] for n, v in top],
                }
                results.append(ctx.path("extra"), [row])
                print(
                    f"profile {b} {pass_}: wall {row['wall_us']:.1f} us, kernels {row['kernel_us']:.1f} us in "
                    f"{row['launches']:.0f} launches; top: "
                    + "; ".join(f"{n[:70]} {us:.1f} us x{c:g}" for n, us, c in row["top"][:5]),
                    flush=True,
                )


def step_peers(ctx):
    """ACU against ``torchvision.ops.deform_conv2d`` through the ``deform-conv2d`` peer backend (its
    mapping: ``impls/backends/deform_conv2d.py``, reference/README.md section 12): agreement of outputs
    and every gradient, then speed, interleaved; TF32 off (torch-naive's cuDNN conv would otherwise
    carry TF32 errors into the float32 agreement)."""
    from ..impls import BACKENDS

    why = BACKENDS[PEER].unavailable()
    if why:  # torchvision missing, or a build that does not match torch
        ctx.note("peers", "deform_conv2d", f"torchvision not usable here: {why[:200]}")
        return
    from . import cases, precision, results

    case = next(c for c in cases.grid("paper") if c.layer == "acu" and c.name == "paper")
    if ctx.rehearse:
        case = _small(case)
    with precision.exact_fp32(), precision.cudnn_benchmark(ctx.device == "cuda"):
        base = {
            "kind": "peer",
            "peer": "torchvision.ops.deform_conv2d",
            "layer": "acu",
            "case": case.name,
            "device": ctx.device,
            "status": "ok",
            "precision": precision.state(),
        }
        results.append(ctx.path("extra"), [{**base, **r} for r in _peer_agreement(ctx, case)])
        for pass_ in ("forward", "forward+backward"):
            rows = _peer_speed(ctx, case, pass_)
            results.append(ctx.path("extra"), [{**base, **r} for r in rows])
            print(f"peers {pass_}: " + ", ".join(f"{r['backend']} {r['median_s'] * 1e6:.1f} us" for r in rows))


PEER = "deform-conv2d"  # the registry's peer backend for ACU (torchvision.ops.deform_conv2d)


def _peer_agreement(ctx, case):
    """Outputs and every gradient of each backend against deform_conv2d, float64 and float32 -> rows."""
    import torch

    from . import runner

    rows = []
    for dtype in ("float64", "float32"):
        t = runner.tensors(case, case.arrays(ctx.seed), dtype, ctx.device)
        ref = runner.call(case, PEER, t)
        names = [k for k, v in t.items() if v is not None]
        dy = torch.randn_like(ref)
        gref = torch.autograd.grad(ref, [t[k] for k in names], dy)
        for b in ctx.backends():
            y = runner.call(case, b, t)
            g = torch.autograd.grad(y, [t[k] for k in names], dy)
            rows.append(
                {
                    "backend": b,
                    "dtype": dtype,
                    "forward_rel": _agree(y, ref),
                    "grad_rel": max(_agree(a, r) for a, r in zip(g, gref)),
                }
            )
    return rows


def _peer_speed(ctx, case, pass_):
    """``pass_`` of each backend and of deform_conv2d, float32, interleaved -> rows with medians and speed-ups."""
    import torch

    from . import runner, timing

    tm = timing.timer(ctx.device)
    t = runner.tensors(case, case.arrays(ctx.seed), "float32", ctx.device)
    leaves = [v for v in t.values() if v is not None]
    dy = torch.randn(case.out_shape(), device=ctx.device)
    fns = {}
    for b in ctx.backends() + ["deform_conv2d"]:
        call = lambda b=b: runner.call(case, PEER if b == "deform_conv2d" else b, t)  # noqa: E731
        if pass_ == "forward":
            fns[b] = (lambda _, call=call: _nograd(call), None)
        else:
            fns[b] = (lambda _, call=call: torch.autograd.grad(call(), leaves, dy), None)
    stats = timing.interleaved(tm, fns, reps=5 if ctx.rehearse else 20, budget_s=3.0)
    med = {b: s.summary()["median_s"] for b, s in stats.items()}
    return [
        {
            "backend": b,
            "dtype": "float32",
            "pass": pass_,
            "median_s": m,
            "timer": tm.method,
            "speedup": med["deform_conv2d"] / m if m else None,
        }
        for b, m in med.items()
    ]


def _nograd(call):
    import torch

    with torch.no_grad():
        return call()


def step_determinism(ctx):
    import torch

    from . import cases, results, runner

    for case in [c for c in cases.grid("paper") if c.name == "paper"]:
        if ctx.rehearse:
            case = _small(case)
        if ctx.left() < 0:
            break
        t = runner.tensors(case, case.arrays(ctx.seed), "float32", ctx.device)
        names = [k for k, v in t.items() if v is not None]
        dy = torch.randn(case.out_shape(), generator=torch.Generator().manual_seed(1)).to(ctx.device)
        for b in ctx.backends():
            runs = []
            try:
                for _ in range(2):
                    y = runner.call(case, b, t)
                    g = torch.autograd.grad(y, [t[k] for k in names], dy)
                    runs.append({"forward": y.detach().clone(), **{k: v.clone() for k, v in zip(names, g)}})
                differs = [k for k in runs[0] if not torch.equal(runs[0][k], runs[1][k])]
                row = {"status": "ok", "identical": not differs, "differs": differs}
            except Exception as exc:  # a backend failing here is a row, not the end of the step
                row = {
                    "status": "error",
                    "identical": None,
                    "differs": [],
                    "reason": f"{type(exc).__name__}: {exc}"[:300],
                }
            row.update(
                kind="determinism", backend=b, layer=case.layer, case=case.name, dtype="float32", device=ctx.device
            )
            results.append(ctx.path("extra"), [row])
            print(f"determinism {b} {case.layer}: {row}")


def step_pytest(ctx):
    from .machine import package_root

    root = package_root()  # a checkout: its suites/
    target = ["suites/test_cuda.py"] if ctx.rehearse else ["suites"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *target]
    cmd += [f"--junitxml={os.path.abspath(ctx.path('junit'))}"]
    print(" ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=root)
    try:
        rc = proc.wait(timeout=max(5.0, ctx.left() - 10.0))
    except subprocess.TimeoutExpired:
        # Ctrl-C: pytest stops, reports and writes the JUnit XML of the tests that ran
        print("pytest: deadline reached, interrupting")
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=8.0)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise SystemExit(124) from None
    # 0 passed, 1 some failed (the XML says which), 5 none selected (rehearsal without a GPU may skip all)
    if rc not in (0, 1, 5):
        raise SystemExit(rc)


NCU_METRICS = (
    "gpu__time_duration.sum",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "launch__registers_per_thread",
    "launch__occupancy_limit_registers",
    "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
)
NCU_SCRIPT = """
import sys
import torch
from rfbench.harness import cases, costmodel, precision, runner

backends = sys.argv[1].split(",")
case = next(c for c in cases.grid("paper") if c.layer == "dau" and c.name == "paper")
arrays = case.arrays(0)
t = runner.tensors(case, arrays, "float32", "cuda")
side = costmodel.standard_side(case, arrays)
w = torch.randn(case.f, case.s, side, side, device="cuda")
dy = torch.randn(case.out_shape(), device="cuda")
leaves = [v for v in t.values() if v is not None]


def once():
    for b in backends:  # forward and backward: the shift, its transpose and the tap sums
        with precision.exact_fp32():
            torch.autograd.grad(runner.call(case, b, t), leaves, dy)
    with torch.no_grad():
        for tf32 in (False, True):
            with precision.fp32(tf32):
                torch.nn.functional.conv2d(t["x"], w, padding=side // 2)


with precision.cudnn_benchmark(True):
    once()  # compiles, autotunes
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    once()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
"""
# The kernels ncu measures: the DAU kernels of the cupy backend and cuDNN's convolutions (the
# glue's small torch kernels are what torch.profiler's step shows).
NCU_KERNELS = "regex:dau_fwd|dau_tapsum|cpass|tpass|dtaps|conv|xmma|cutlass|gemm"


def step_ncu(ctx):
    ncu = shutil.which("ncu")
    if ctx.rehearse or ncu is None:
        why = "no CUDA device (rehearsal on the CPU)" if ctx.rehearse else "ncu not on PATH"
        ctx.note("ncu", "Nsight Compute", why)
        return
    from . import results
    from .machine import child_env, package_root

    root = package_root()
    backends = [b for b in ctx.backends() if b == "cupy"]  # the redesigned kernels (ncu is slow per launch)
    env = child_env()
    # The full metric set first; a metric this ncu does not know fails the whole run: then the basic
    # set.  ncu's messages go to the log as they come, its CSV to a file of its own, parsed after.
    csv_path = os.path.join(root, ".ncu.csv")
    rows, rc = [], 1
    for metrics in (NCU_METRICS, NCU_METRICS[:5]):
        cmd = [ncu, "--clock-control", "none", "--profile-from-start", "off", "--kernel-name", NCU_KERNELS]
        cmd += ["--launch-count", "40"]
        cmd += ["--csv", "--page", "raw", "--log-file", csv_path, "--metrics", ",".join(metrics)]
        print(" ".join(cmd), flush=True)
        try:
            run = [*cmd, sys.executable, "-c", NCU_SCRIPT, ",".join(backends)]
            rc = subprocess.run(run, cwd=root, env=env, timeout=max(5.0, ctx.left() - 5)).returncode
        except subprocess.TimeoutExpired:
            rc = 124
            print("ncu: deadline reached", flush=True)
        text = open(csv_path, errors="replace").read() if os.path.exists(csv_path) else ""
        print(text[-20000:])
        rows = _ncu_rows(text, metrics)
        if rows:
            results.append(ctx.path("extra"), rows)
        print(f"ncu: {len(rows)} kernel rows, exit status {rc}")
        if rows or rc == 124 or ctx.left() < 30:
            break
    if not rows:
        raise SystemExit(rc or 1)


def _ncu_rows(text, metrics=NCU_METRICS):
    """``ncu --csv --page raw`` -> one row per kernel launch (in launch order) with ``metrics``."""
    import csv
    import io

    lines = [ln for ln in text.splitlines() if ln.startswith('"')]
    if not lines:
        return []
    table = list(csv.DictReader(io.StringIO("\n".join(lines))))
    rows = []
    for r in table:
        if not r.get("Kernel Name") or r.get("ID", "").strip() == "":
            continue  # the units line
        row = {
            "kind": "ncu",
            "id": r.get("ID"),
            "kernel": r.get("Kernel Name"),
            "grid": r.get("Grid Size"),
            "block": r.get("Block Size"),
        }
        for m in metrics:
            v = r.get(m)
            try:
                row[m] = float(v.replace(",", "")) if v not in (None, "", "n/a") else None
            except ValueError:
                row[m] = v
        rows.append(row)
    return rows


STEP_FNS = {
    "probe": step_probe,
    "warmup": step_warmup,
    "matrix-smoke": step_matrix_smoke,
    "bench-paper": step_bench_paper,
    "profile": step_profile,
    "peers": step_peers,
    "determinism": step_determinism,
    "matrix-default": step_matrix_default,
    "pytest": step_pytest,
    "ncu": step_ncu,
    "bench-sweep": step_bench_sweep,
}


def child(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m {__package__}.gpurun")
    p.add_argument("--child", required=True, choices=NAMES)
    p.add_argument("--out", required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--deadline", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="-")
    p.add_argument("--rehearse", action="store_true")
    a = p.parse_args(argv)
    skip = () if a.skip == "-" else tuple(a.skip.split(","))
    ctx = Ctx(a.out, a.device, a.rehearse, a.deadline, skip, a.seed)
    t0 = time.monotonic()
    STEP_FNS[a.child](ctx)
    print(f"step {a.child} done in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":  # -m rfbench.harness.gpurun, or -m harness.gpurun in a checkout: the package module
    from rfbench.harness.gpurun import child as _child

    sys.exit(_child())
