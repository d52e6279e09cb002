"""The correctness runner: one case through one backend, compared with the reference.

Data flows one way: a ``Case`` -> ``run_case`` (calls ``impls`` and ``reference``) -> result
rows (dicts of one schema, ``ROW_FIELDS``) -> summaries and reports.
"""

import functools
import traceback

import numpy as np
import torch

from .. import impls, reference
from ..impls import _registry

from . import metrics, precision

DTYPES = {name: getattr(torch, name) for name in _registry.DTYPES}  # the registry's dtype names -> torch

ROW_FIELDS = (
    "kind",
    "layer",
    "backend",
    "device",
    "dtype",
    "case",
    "output",
    "status",
    "reason",
    "rel_err",
    "max_abs_err",
    "bound_ratio",
    "n_terms",
    "seed",
    "case_fields",
    "precision",
)


def rounded(arrays, dtype):
    """The float64 values the backend actually sees after casting to ``dtype``."""
    out = {}
    for k, v in arrays.items():
        out[k] = None if v is None else torch.from_numpy(np.asarray(v)).to(DTYPES[dtype]).double().numpy()
    return out


@functools.lru_cache(maxsize=64)
def reference_results(case, dtype, seed):
    """Reference forward, gradients and their ``sum|terms|`` magnitudes on the rounded inputs.

    -> ``(arrays, dy, {"forward": y, name: grad}, {same: magnitude})`` (cached per case, dtype, seed).
    """
    arrays = rounded(case.arrays(seed), dtype)
    layer = reference.LAYERS[case.layer]
    rng = np.random.default_rng([case.seed, seed, 7])
    dy = rounded({"dy": rng.standard_normal(case.out_shape())}, dtype)["dy"]
    fhp, bhp = case.hparams(), case.backward_hparams()
    exact = {"forward": layer.forward(**arrays, **fhp), **layer.backward(**arrays, dy=dy, **bhp)}
    mag = {
        "forward": layer.forward(**arrays, **fhp, absolute=True),
        **layer.backward(**arrays, dy=dy, **bhp, absolute=True),
    }
    return arrays, dy, exact, mag


def tensors(case, arrays, dtype, device):
    """Leaf tensors for the public API (``x`` with permuted strides when the case asks)."""
    out = {}
    for name, v in arrays.items():
        if v is None:
            out[name] = None
            continue
        if name == "x" and not case.contiguous:
            t = torch.from_numpy(np.ascontiguousarray(np.swapaxes(v, 2, 3))).to(DTYPES[dtype]).to(device)
            t = t.transpose(2, 3)
        else:
            t = torch.from_numpy(np.array(v)).to(DTYPES[dtype]).to(device)
        out[name] = t.requires_grad_(True)
    return out


def call(case, backend, t, op=None):
    """Run ``case``'s layer through the public API (its table's ``function``) on tensors ``t``; or, given
    ``op``, that backend op outside the registry (``impls._ops.apply``: the same hyper-parameters)."""
    hp = case.hparams(backward=True)
    if op is not None:
        from ..impls import _ops

        return _ops.apply(op, case.layer, tuple(t[n] for n in reference.LAYERS[case.layer].tensors), hp)
    return getattr(impls, reference.LAYERS[case.layer].function)(**t, **hp, backend=backend)


def _row(case, backend, device, dtype, output, status, reason="", seed=0, **m):
    row = dict.fromkeys(ROW_FIELDS)
    row.update(
        kind="correctness",
        layer=case.layer,
        backend=backend,
        device=str(device),
        dtype=dtype,
        case=case.name,
        output=output,
        status=status,
        reason=reason,
        seed=seed,
        case_fields=case.fields(),
        precision=precision.state(),
        **m,
    )
    return row


def run_case(case, backend, dtype, device="cpu", seed=0, op=None):
    """Forward and every gradient of ``case`` on ``backend`` vs the reference -> list of rows.

    A refused request gives one ``skip`` row with the backend's reason; an exception one
    ``error`` row with its message; a modified input one ``fail`` row.  Runs with TF32 off
    (``precision.exact_fp32``: the float32 bounds are FP32 rounding bounds), restored after;
    every row records the settings it ran under (``precision``).  ``op``: judge this op of
    ``backend`` run outside the registry instead (tests: a CUDA backend under Numba's simulator or
    the CPU emulation of its kernels, on CPU tensors).
    """
    with precision.exact_fp32():
        return _run_case(case, backend, dtype, device, seed, op)


def _run_case(case, backend, dtype, device, seed, op=None):
    device = torch.device(device)
    if op is not None:
        refusal = None
    elif backend in impls.BACKENDS:
        refusal = impls.BACKENDS[backend].refusal(case.layer, device, DTYPES[dtype])
    else:
        refusal = "unknown backend"
    if refusal:
        return [_row(case, backend, device, dtype, "all", "skip", refusal, seed)]
    arrays, dy, exact, mag = reference_results(case, dtype, seed)
    t = tensors(case, arrays, dtype, device)
    before = {k: v.detach().clone() for k, v in t.items() if v is not None}
    try:
        y = call(case, backend, t, op)
        names = [k for k, v in t.items() if v is not None]
        dyt = torch.from_numpy(dy).to(DTYPES[dtype]).to(device)
        grads = torch.autograd.grad(y, [t[k] for k in names], dyt, allow_unused=True)
    except impls.Inexpressible as exc:  # a peer refusing what its mapping cannot make exact: a refusal
        return [_row(case, backend, device, dtype, "all", "skip", str(exc), seed)]
    except Exception as exc:  # an error is a failed result, reported with its message
        msg = f"{type(exc).__name__}: {exc}"
        return [_row(case, backend, device, dtype, "all", "error", msg + "\n" + traceback.format_exc(limit=3), seed)]
    got = {"forward": y, **dict(zip(names, grads))}
    eps = metrics.EPS[dtype]
    record = impls.BACKENDS[backend]
    ftz = record.flushes_subnormals(device, dtype, case.layer)
    rows = []
    for out, ref in exact.items():
        if ref is None:
            continue
        a = got.get(out)
        if a is None:
            rows.append(_row(case, backend, device, dtype, out, "fail", "no gradient returned", seed))
            continue
        nterms = metrics.n_terms(case, out, dtype)
        floor = metrics.floor(case, out, arrays, dy, dtype, ftz=ftz)
        if record.coordinate_first:  # a peer's interpolation weights from a rounded coordinate (metrics)
            nterms += metrics.coordinate_ops(case, arrays, dtype)
            floor += metrics.coordinate_floor(case, out, arrays, dy, dtype)
        m = metrics.compare(a.detach().double().cpu().numpy(), ref, mag[out], eps, nterms, floor)
        rows.append(
            _row(
                case,
                backend,
                device,
                dtype,
                out,
                "pass" if m["ok"] else "fail",
                m["note"],
                seed,
                rel_err=m["rel_err"],
                max_abs_err=m["max_abs_err"],
                bound_ratio=m["bound_ratio"],
                n_terms=nterms,
            )
        )
    changed = [k for k, v in before.items() if not torch.equal(v, t[k].detach())]
    if changed:
        rows.append(_row(case, backend, device, dtype, "inputs", "fail", f"inputs modified: {changed}", seed))
    return rows


def devices():
    """Devices to test on this machine."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def matrix(cases, backends, dtypes, devs, seed=0, progress=None):
    """Every case x backend x dtype x device -> rows (``progress(i, total)`` after each)."""
    jobs = [(c, b, d, dev) for c in cases for b in backends for d in dtypes for dev in devs]
    rows = []
    for i, (c, b, d, dev) in enumerate(jobs):
        rows += run_case(c, b, d, dev, seed)
        if progress:
            progress(i + 1, len(jobs))
    return rows


def summary(rows):
    """Rows -> one dict per (layer, backend, device, dtype): cases passed / failed / skipped,
    worst forward and gradient relative error and worst bound ratio."""
    groups = {}
    for r in rows:
        key = (r["layer"], r["backend"], r["device"], r["dtype"])
        g = groups.setdefault(key, {"cases": {}, "fwd": 0.0, "grad": 0.0, "ratio": 0.0})
        st = g["cases"].get(r["case"], "pass")
        if r["status"] in ("fail", "error"):
            st = "fail"
        elif r["status"] == "skip":
            st = "skip" if st == "pass" else st
        g["cases"][r["case"]] = st
        if r["rel_err"] is not None:
            which = "fwd" if r["output"] == "forward" else "grad"
            g[which] = max(g[which], r["rel_err"])
            g["ratio"] = max(g["ratio"], r["bound_ratio"])
    out = []
    for (layer, backend, device, dtype), g in sorted(groups.items()):
        states = list(g["cases"].values())
        ran = any(s != "skip" for s in states)
        reasons = sorted(
            {
                r["reason"]
                for r in rows
                if r["status"] == "skip"
                and (r["layer"], r["backend"], r["device"], r["dtype"]) == (layer, backend, device, dtype)
            }
        )
        out.append(
            {
                "layer": layer,
                "backend": backend,
                "device": device,
                "dtype": dtype,
                "passed": states.count("pass"),
                "failed": states.count("fail"),
                "skipped": states.count("skip"),
                "worst_fwd_rel": g["fwd"] if ran else None,
                "worst_grad_rel": g["grad"] if ran else None,
                "worst_bound_ratio": g["ratio"] if ran else None,
                "skip_reason": "; ".join(reasons),
            }
        )
    return out


def format_summary(summ):
    """Summary dicts -> a plain-text table."""
    head = (
        f"{'layer':<10} {'backend':<12} {'device':<6} {'dtype':<8} {'pass':>4} {'fail':>4} {'skip':>4} "
        f"{'worst fwd rel':>13} {'worst grad rel':>14} {'err/bound':>9}  note"
    )
    lines = [head, "-" * len(head)]
    fmt = lambda v: "-" if v is None else f"{v:.2e}"  # noqa: E731
    for s in summ:
        lines.append(
            f"{s['layer']:<10} {s['backend']:<12} {s['device']:<6} {s['dtype']:<8} {s['passed']:>4} "
            f"{s['failed']:>4} {s['skipped']:>4} {fmt(s['worst_fwd_rel']):>13} {fmt(s['worst_grad_rel']):>14} "
            f"{fmt(s['worst_bound_ratio']):>9}  {s['skip_reason'][:60]}"
        )
    return "\n".join(lines)
