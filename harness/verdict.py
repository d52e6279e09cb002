"""The report's three answers, computed from result rows (a DataFrame of ``report.frame``):

- ``agreement``: per machine x backend x device x dtype, cases passed / failed over every layer
  and the worst forward error over its rounding bound (reference/README.md section 9);
- ``gradients``: per layer, one column per parameter, the worst relative error and worst
  error over bound per backend and dtype, with the reference's own check against float64
  central differences (``kind: "fd"`` rows, reference/README.md section 10) as its last row;
- ``speed``: per layer and pass, the best backend's speed-up over each named baseline beside
  the model's and the paper's gamma (reference/README.md section 8), rows flagged contended or
  implausible excluded and counted.

``lines`` turns them into one sentence per question.  Old rows without the speed fields of
issue 13 (``speedups``, ``gammas``, ``flags``) are read as unknown, never as zero.
"""

import math

import numpy as np

try:
    import pandas as pd
except ImportError:  # the constants below serve ``rfbench matrix`` and ``bench`` without pandas;
    pd = None  # the tables need it, and the commands that write them say so first (harness.cli)

from ..impls._registry import peers
from . import baselines

PAPER = {"gamma": 10.125, "forward": 3.25, "forward+backward": 12.54, "gpu": "RTX 2080 Ti", "side": 9}
BASELINES = baselines.ALL
PARAMS = ("x", "weight", "alpha", "mu_x", "mu_y", "pos_x", "pos_y", "sigma", "bias")
PASSES = ("forward", "backward", "forward+backward")
EXCLUDING = ("contended", "implausible")


def _kind(df, kind):
    return df[df["kind"] == kind].copy() if "kind" in df else pd.DataFrame()


def _num(v):
    """A float, or None for missing / NaN values."""
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _max(series):
    v = pd.to_numeric(series, errors="coerce").dropna()
    return float(v.max()) if len(v) else None


# ---------------------------------------------------------------- agreement


def _case_states(g):
    """Rows of one backend x device x dtype -> Series case id -> "pass" / "fail" / "skip"."""
    ids = g["layer"] + "-" + g["case"]
    return (
        g["status"]
        .groupby(ids)
        .agg(lambda s: "fail" if s.isin(["fail", "error"]).any() else ("skip" if (s == "skip").all() else "pass"))
    )


def agreement(df):
    """-> (ran, not_run): DataFrames.  ``ran``: machine, backend, device, dtype, passed, failed,
    worst_fwd_rel, worst_fwd_err_over_bound, worst_case; ``not_run``: machine, backend, device,
    dtype, reason (combinations where every case was refused)."""
    c = _kind(df, "correctness")
    ran, not_run = [], []
    if c.empty:
        return pd.DataFrame(ran), pd.DataFrame(not_run)
    for key, g in c.groupby(["machine", "backend", "device", "dtype"], sort=True):
        states = _case_states(g)
        base = dict(zip(("machine", "backend", "device", "dtype"), key))
        if (states == "skip").all():
            reasons = sorted(set(g.loc[g["status"] == "skip", "reason"].fillna("")))
            not_run.append({**base, "reason": "; ".join(reasons)})
            continue
        fwd = g[(g["output"] == "forward") & g["bound_ratio"].notna()]
        worst = fwd.loc[pd.to_numeric(fwd["bound_ratio"]).idxmax()] if len(fwd) else None
        ran.append(
            {
                **base,
                "passed": int((states == "pass").sum()),
                "failed": int((states == "fail").sum()),
                "worst_fwd_rel": _max(fwd["rel_err"]),
                "worst_fwd_err_over_bound": _num(worst["bound_ratio"]) if worst is not None else None,
                "worst_case": f"{worst['layer']}-{worst['case']}" if worst is not None else None,
                "failed_cases": ", ".join(sorted(states.index[states == "fail"]))[:120],
            }
        )
    return pd.DataFrame(ran), pd.DataFrame(not_run)


# ---------------------------------------------------------------- gradients


def _param_table(rows, label_cols):
    """Rows with ``output`` = parameter -> DataFrame: label columns, then ``<param> rel`` and
    ``<param> err/bound`` for every parameter present."""
    rows = rows[rows["output"].isin(PARAMS) & rows["rel_err"].notna()]
    if rows.empty:
        return pd.DataFrame()
    params = [p for p in PARAMS if p in set(rows["output"])]
    out = []
    for key, g in rows.groupby(label_cols, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rec = dict(zip(label_cols, key))
        for p in params:
            sub = g[g["output"] == p]
            rec[f"{p} rel"] = _max(sub["rel_err"])
            rec[f"{p} err/bound"] = _max(sub["bound_ratio"])
        out.append(rec)
    return pd.DataFrame(out)


def gradients(df):
    """-> dict layer -> DataFrame, one row per machine x backend x device x dtype (the
    reference's central-difference check last, backend "reference vs central differences")."""
    c = _kind(df, "correctness")
    fd = _kind(df, "fd")
    layers = sorted(set(c["layer"]) if not c.empty else set()) + sorted(
        (set(fd["layer"]) if not fd.empty else set()) - (set(c["layer"]) if not c.empty else set())
    )
    out = {}
    keys = ["machine", "backend", "device", "dtype"]
    for layer in layers:
        parts = []
        if not c.empty:
            parts.append(_param_table(c[c["layer"] == layer], keys))
        if not fd.empty:
            f = fd[fd["layer"] == layer].assign(backend="reference vs central differences")
            parts.append(_param_table(f, keys))
        table = (
            pd.concat([p for p in parts if not p.empty], ignore_index=True)
            if any(not p.empty for p in parts)
            else pd.DataFrame()
        )
        if not table.empty:
            cols = keys + [f"{p} {m}" for p in PARAMS for m in ("rel", "err/bound") if f"{p} {m}" in table]
            out[layer] = table[cols]
    return out


# ---------------------------------------------------------------- speed


def _list(v):
    return v if isinstance(v, list) else []


def _dict(v):
    return v if isinstance(v, dict) else {}


def excluded(row):
    """The flags that exclude a speed row from verdicts (contended or implausible), or []."""
    return [f for f in _list(row.get("flags")) if str(f).startswith(EXCLUDING)]


def speed_rows(df):
    """Speed rows that ran, with ``over`` (dict baseline -> speed-up), ``gamma`` (dict baseline ->
    model gamma) and ``excluded`` (the excluding flags) filled in from new or old fields."""
    s = _kind(df, "speed")
    if s.empty:
        return s
    s = s[s["status"] == "ok"].copy()
    over, gamma, excl = [], [], []
    for r in s.to_dict("records"):
        o = {b: _num(v) for b, v in _dict(r.get("speedups")).items()}
        if "torch-naive" not in o and _num(r.get("speedup")) is not None:
            o["torch-naive"] = _num(r.get("speedup"))
        g = {b: _num(v) for b, v in _dict(r.get("gammas")).items()}
        if "torch-naive" not in g and _num(r.get("model_gamma")) is not None:
            g["torch-naive"] = _num(r.get("model_gamma"))
        over.append(o)
        gamma.append(g)
        excl.append(excluded(r))
    s["over"], s["gamma"], s["excluded"] = over, gamma, excl
    return s


def efficient(speed):
    """Rows of our backends under test (not a baseline, not the reference, not a peer: the report's
    "which should I use" section sets peers beside them)."""
    return speed[~speed["backend"].isin(BASELINES + ("reference",) + tuple(peers()))]


def split_excluded(speed):
    """-> (kept, excluded) rows of ``speed_rows``."""
    mask = np.array([bool(e) for e in speed["excluded"]], dtype=bool) if len(speed) else np.zeros(0, bool)
    return speed[~mask], speed[mask]


def has(speed, baseline):
    """Boolean mask: rows with a measured speed-up over ``baseline``."""
    return np.array([o.get(baseline) is not None for o in speed["over"]], dtype=bool)


def headline_case(rows):
    """The case a layer's verdict is read on (``rows``: its speed rows): ``paper`` where measured,
    else the case with the most work (the largest dense MAC count: never an empty batch)."""
    names = sorted(set(rows["case"]))
    if "paper" in names:
        return "paper"
    if "macs_naive" in rows:
        work = pd.to_numeric(rows["macs_naive"], errors="coerce").groupby(rows["case"]).max()
        if work.notna().any():
            return work.idxmax()
    return names[0]


def speed(df):
    """-> DataFrame, one row per machine x device x dtype x layer x pass: the headline case, its
    best backend (largest speed-up over torch-naive), that backend's speed-up, gamma and
    measured/gamma for each baseline, the paper gamma, the geometric mean of the best speed-up
    over torch-naive across all cases, and the groups excluded."""
    s = speed_rows(df)
    if s.empty:
        return pd.DataFrame()
    out = []
    for key, g in s.groupby(["machine", "device", "dtype", "layer"], sort=True):
        case = headline_case(g)
        for pass_ in PASSES:
            gp = g[g["pass"] == pass_]
            if gp.empty:
                continue
            kept, bad = split_excluded(gp)
            kept = efficient(kept)
            rec = dict(zip(("machine", "device", "dtype", "layer"), key))
            flagged = "flags" in gp and gp["flags"].map(lambda f: isinstance(f, list)).any()
            rec.update(
                {"pass": pass_, "case": case, "excluded groups": int(bad["group"].nunique()) if flagged else None}
            )
            rec["groups"] = int(gp["group"].nunique())
            head = kept[(kept["case"] == case).to_numpy() & has(kept, "torch-naive")]
            best = head.loc[head["over"].map(lambda o: o["torch-naive"]).idxmax()] if len(head) else None
            rec["best backend"] = best["backend"] if best is not None else None
            # gamma is the cost model's, not a measurement: shown for a case whose groups were all excluded too
            model = efficient(gp[(gp["case"] == case).to_numpy()])
            model_gamma = model["gamma"].iloc[0] if len(model) else {}
            for b in BASELINES:
                up = best["over"].get(b) if best is not None else None
                gam = best["gamma"].get(b) if best is not None else model_gamma.get(b)
                rec[f"x over {b}"] = up
                rec[f"gamma {b}"] = gam
                rec[f"measured/gamma {b}"] = up / gam if up is not None and gam else None
            rec["paper gamma"] = _num(best["paper_gamma"]) if best is not None else None
            per_case = kept.groupby("case")["over"].agg(
                lambda v: max([o["torch-naive"] for o in v if o.get("torch-naive")] or [np.nan])
            )
            per_case = per_case.dropna()
            rec["geomean x over torch-naive (all cases)"] = (
                float(np.exp(np.log(per_case.astype(float)).mean())) if len(per_case) else None
            )
            rec["cases"] = int(len(per_case))
            out.append(rec)
    return pd.DataFrame(out)


def paper_row():
    """The paper's own figures (DAU IJCV section 4.4), for the speed table."""
    return {
        "source": f"paper (DAU-ConvNet, {PAPER['gpu']})",
        "case": f"K = 2, {PAPER['side']} x {PAPER['side']} standard kernel, 192 channels, 32 x 32",
        "forward": PAPER["forward"],
        "forward+backward": PAPER["forward+backward"],
        "gamma": PAPER["gamma"],
    }


# ---------------------------------------------------------------- sentences


def _g(v, fmt="{:.3g}"):
    return "-" if v is None else fmt.format(v)


def agreement_line(ran, not_run):
    if ran.empty:
        return "Agreement: no correctness rows in these results."
    ok = ran[ran["failed"] == 0]
    runs = int(ran["passed"].sum() + ran["failed"].sum())
    fails = int(ran["failed"].sum())
    w = ran.dropna(subset=["worst_fwd_err_over_bound"])
    worst = w.loc[w["worst_fwd_err_over_bound"].idxmax()] if len(w) else None
    text = (
        f"Agreement: {len(ok)} of {len(ran)} backend x device x dtype combinations pass every case "
        f"({runs} case runs, {fails} failed)"
    )
    if worst is not None:
        text += (
            f"; worst forward error {_g(worst['worst_fwd_err_over_bound'])} of its rounding bound "
            f"({worst['backend']} {worst['device']} {worst['dtype']}, {worst['worst_case']})"
        )
    bad = ran[ran["failed"] > 0]
    if len(bad):
        text += ". FAILING: " + "; ".join(
            f"{r.backend} {r.device} {r.dtype} ({r.failed} cases: {r.failed_cases})" for r in bad.itertuples()
        )
    if not not_run.empty:
        why = not_run.groupby("backend")["reason"].agg(lambda v: "; ".join(sorted(set(v))))
        text += ". Not run here: " + ", ".join(f"{b} ({r})" for b, r in why.items())
    return text + "."


def gradient_worst(grads):
    """-> (worst, fd_worst, fd_n): the worst backend gradient and the worst central-difference check,
    each ``(err/bound, layer, parameter, backend, dtype, rel_err)`` or None, and the checks counted."""
    worst, fd_worst, fd_n = None, None, 0
    for layer, t in grads.items():
        for r in t.to_dict("records"):
            for col, v in r.items():
                if not col.endswith(" err/bound") or _num(v) is None:
                    continue
                p = col[: -len(" err/bound")]
                item = (v, layer, p, r["backend"], r["dtype"], r.get(f"{p} rel"))
                if r["backend"] == "reference vs central differences":
                    fd_n += 1
                    fd_worst = item if fd_worst is None or v > fd_worst[0] else fd_worst
                elif r["backend"] != "reference":
                    worst = item if worst is None or v > worst[0] else worst
    return worst, fd_worst, fd_n


def gradients_line(grads):
    worst, fd_worst, fd_n = gradient_worst(grads)
    if worst is None and fd_worst is None:
        return "Gradients: no gradient rows in these results."
    text = "Gradients: "
    if worst is not None:
        verdict = "within" if worst[0] <= 1 else "OUTSIDE"
        text += (
            f"every backend's gradients {verdict} their rounding bounds, worst {_g(worst[0])} of the bound "
            f"({worst[3]} {worst[4]}, {worst[1]} d/d{worst[2]}, relative error {_g(worst[5], '{:.1e}')})"
        )
    else:
        text += "no backend gradient rows"
    if fd_worst is not None:
        verdict = "agree" if fd_worst[0] <= 1 else "DISAGREE"
        text += (
            f"; the reference's analytic gradients {verdict} with float64 central differences in {fd_n} "
            f"layer x parameter checks, worst {_g(fd_worst[0])} of the bound ({fd_worst[1]} d/d{fd_worst[2]}, "
            f"relative error {_g(fd_worst[5], '{:.1e}')})"
        )
    else:
        text += "; no central-difference check in these results"
    return text + "."


def speed_line(table):
    if table.empty:
        return "Speed vs gamma: no speed rows in these results."
    dau = table[table["layer"] == "dau"]
    t = dau if len(dau) else table
    parts = []
    for key, g in t.groupby(["machine", "device", "dtype", "layer"], sort=True):
        case = g["case"].iloc[0]
        bits = []
        for r in g.to_dict("records"):
            if r["pass"] == "backward" or not isinstance(r["best backend"], str):
                continue
            r = {k: (_num(v) if k.startswith(("x over", "gamma", "measured/")) else v) for k, v in r.items()}
            b = f"{r['pass']} {r['best backend']} {_g(r['x over torch-naive'], '{:.2f}')}x over torch-naive"
            ratio, gam = _g(r["measured/gamma torch-naive"], "{:.2f}"), _g(r["gamma torch-naive"], "{:.1f}")
            b += f" ({ratio} of model gamma {gam})"
            if r["x over conv2d-std"] is not None:
                b += (
                    f", {_g(r['x over conv2d-std'], '{:.2f}')}x over conv2d-std "
                    f"({_g(r['measured/gamma conv2d-std'], '{:.2f}')} of gamma {_g(r['gamma conv2d-std'], '{:.1f}')})"
                )
            for v, what in (
                (baselines.STD_TF32, "with TF32 on"),
                (baselines.STD_FP16, "in float16"),
                (baselines.STD_BF16, "in bfloat16"),
            ):
                if r.get(f"x over {v}") is not None:
                    b += f", {_g(r[f'x over {v}'], '{:.2f}')}x over conv2d-std {what}"
            bits.append(b)
        bits = bits or ["no group left to judge (all excluded or no backend under test)"]
        where = f" of {key[0]}" if table["machine"].nunique() > 1 else ""  # a merged report names each machine
        parts.append(f"{key[3]} {case} case on {key[1]} {key[2]}{where}: " + "; ".join(bits))
    known = table["excluded groups"].notna()
    total = int(table["groups"].sum())
    if known.any():
        excl = (
            f"Excluded as contended or implausible: {int(table.loc[known, 'excluded groups'].sum())} of {total} groups"
        )
        if not known.all():
            excl += f" ({int(table.loc[~known, 'groups'].sum())} groups carry no flags)"
    else:
        excl = f"Contention and plausibility flags: not recorded in these rows ({total} groups, older format)"
    return (
        "Speed vs gamma: "
        + " | ".join(parts)
        + f". Paper: {PAPER['forward']}x forward, {PAPER['forward+backward']}x forward+backward over a "
        f"{PAPER['side']} x {PAPER['side']} conv2d at gamma {PAPER['gamma']} ({PAPER['gpu']}). " + excl + "."
    )


def compute(df):
    """-> dict with ``agreement`` (ran), ``not_run``, ``gradients`` (dict), ``speed`` and ``lines``."""
    ran, not_run = agreement(df)
    grads = gradients(df)
    sp = speed(df)
    return {
        "agreement": ran,
        "not_run": not_run,
        "gradients": grads,
        "speed": sp,
        "lines": [agreement_line(ran, not_run), gradients_line(grads), speed_line(sp)],
    }


# ---------------------------------------------------------------- outcomes (verdict.json, the markers)

PASS, FAIL, NOT_MEASURED = "pass", "fail", "not measured"
RULES = {
    "agreement": "pass: every backend x device x dtype that ran passes every case (forward error within its "
    "rounding bound); fail: any case fails; not measured: no correctness rows",
    "gradients": "pass: every backend gradient within its rounding bound and the reference's analytic gradients "
    "within the central-difference bound; fail: any above; not measured: no gradient rows",
    "speed": "pass: in every layer x pass judged, the best backend is faster than torch-naive (the exact dense "
    "kernel) on the headline case; fail: one is not; judged: a layer x pass with a group left (not contended or "
    "implausible, a backend under test) whose model gamma over torch-naive is above 1 (dau_gauss has no cheaper "
    "algorithm, gamma 1: shown, not judged); not measured: nothing judged",
}


def _records(table):
    """A table -> JSON-ready records (NaN as None)."""
    rec = table.to_dict("records")
    return [{k: _num(v) if isinstance(v, (float, np.floating)) else v for k, v in r.items()} for r in rec]


def _worst(item):
    if item is None:
        return None
    keys = ("err_over_bound", "layer", "parameter", "backend", "dtype", "rel_err")
    return dict(zip(keys, (_num(item[0]), *item[1:5], _num(item[5]))))


def outcomes(v):
    """``compute``'s result -> question -> {"outcome": PASS / FAIL / NOT_MEASURED, "rule", "line", and
    the figures behind it}: what ``verdict.json`` holds and what colours the verdict lines."""
    ran, not_run, sp = v["agreement"], v["not_run"], v["speed"]
    if ran.empty:
        agree = NOT_MEASURED
    else:
        agree = FAIL if int(ran["failed"].sum()) else PASS
    worst, fd_worst, fd_n = gradient_worst(v["gradients"])
    marks = [w[0] for w in (worst, fd_worst) if w is not None]
    grad = NOT_MEASURED if not marks else FAIL if max(marks) > 1 else PASS
    led = [] if sp.empty else [r for r in sp.to_dict("records") if isinstance(r.get("best backend"), str)]
    judged = [r for r in led if (_num(r.get("gamma torch-naive")) or 0) > 1]
    slow = [r for r in judged if (_num(r.get("x over torch-naive")) or 0) <= 1]
    speed_out = NOT_MEASURED if not judged else FAIL if slow else PASS
    lines = dict(zip(("agreement", "gradients", "speed"), v["lines"]))
    return {
        "agreement": {
            "outcome": agree,
            "rule": RULES["agreement"],
            "line": lines["agreement"],
            "combinations": _records(ran),
            "not_run": _records(not_run),
        },
        "gradients": {
            "outcome": grad,
            "rule": RULES["gradients"],
            "line": lines["gradients"],
            "worst_backend": _worst(worst),
            "worst_central_differences": _worst(fd_worst),
            "central_difference_checks": fd_n,
        },
        "speed": {
            "outcome": speed_out,
            "rule": RULES["speed"],
            "line": lines["speed"],
            "judged": len(judged),
            "not_judged": [
                f"{r['layer']} {r['pass']} (model gamma {_g(_num(r.get('gamma torch-naive')))})"
                for r in led
                if r not in judged
            ],
            "not_faster": [f"{r['layer']} {r['pass']} {r['best backend']}" for r in slow],
            "groups": _records(sp),
        },
    }


def overall(out):
    """One word for a run: FAIL if any question fails, PASS if every one passes, else NOT_MEASURED
    (something was not measured, nothing failed)."""
    got = [q["outcome"] for q in out.values()]
    return FAIL if FAIL in got else PASS if all(g == PASS for g in got) else NOT_MEASURED


MARK = {PASS: "PASS", FAIL: "FAIL", NOT_MEASURED: "NOT MEASURED"}


def marked(v):
    """``compute``'s result -> [(outcome, line)] for the three questions, in order: the word and
    colour of each verdict line come from its own outcome, never a fixed green."""
    out = outcomes(v)
    return [(out[q]["outcome"], out[q]["line"]) for q in ("agreement", "gradients", "speed")]
