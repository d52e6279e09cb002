"""Reports: results files (any number, any machines) -> ``report.md``, a self-contained
``report.html`` (figures embedded), ``verdict.md`` (the verdict block alone, for the README)
and ``summary.csv``; and ``compare`` of two files.

Order: the verdict (``harness.verdict``: agreement, gradient accuracy, speed against gamma),
then the figures (``harness.figures``) with captions, then the detailed tables (collapsed in
HTML).  Speed-ups are ratios measured within one group (one run, one machine); averages
across cases are geometric means.  Missing values render as "-" everywhere.
"""

import base64
import html
import math
import os

import numpy as np
import pandas as pd

from ..impls._registry import packages, peers
from . import results, verdict

PAPER = {"gamma": 10.125, "inference": 3.25, "training": 12.54, "gpu": "RTX 2080 Ti"}
TOLERANCE = "|a-b| <= (u + u64) n sum|terms| per element (err/bound <= 1)"


def _machine(env):
    env = env or {}
    return f"{env.get('machine', '?')} ({env.get('gpu') or env.get('cpu', '?')})"


def frame(paths):
    """Rows of the results files -> DataFrame with a ``machine`` column."""
    # Rows without an environment are bookkeeping (gpu-run's step log), not results.
    rows = [r for r in results.load(paths) if isinstance(r.get("env"), dict)]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["machine"] = [_machine(e) if isinstance(e, dict) else "?" for e in df.get("env", [None] * len(df))]
    return df


def _kind(df, kind):
    return df[df["kind"] == kind].copy() if "kind" in df else pd.DataFrame()


def environment_table(df):
    machine = ("cpu", "cpu_isa", "torch_cpu_capability", "cpu_count", "torch_threads", "gpu", "driver", "cuda")
    keys = (*machine, *packages(), "tf32_matmul", "tf32_cudnn", "git_commit")  # packages: the backends' declared
    vec = ("numba_vector_bits", "numba_slp", "numba_fallback", "ftz", "daz")
    out = {}
    for m, e in zip(df["machine"], df["env"]):
        if isinstance(e, dict) and m not in out:
            v = e.get("vector") or {}  # results from before it was recorded have none
            out[m] = {"machine": m, **{k: e.get(k) for k in keys}, **{k: v.get(k) for k in vec}}
    return pd.DataFrame(list(out.values()))


def correctness_table(df):
    """Per machine x layer x backend x device x dtype: case counts, worst errors, tolerance."""
    c = _kind(df, "correctness")
    if c.empty:
        return c
    out = []
    for key, g in c.groupby(["machine", "layer", "backend", "device", "dtype"], sort=True):
        per_case = g.groupby("case")["status"].agg(
            lambda s: "fail" if s.isin(["fail", "error"]).any() else ("skip" if (s == "skip").all() else "pass")
        )
        ran = g[g["rel_err"].notna()]
        grads = ran[ran["output"] != "forward"].groupby("output")["rel_err"].max()
        fwd = ran[ran["output"] == "forward"]["rel_err"]
        skips = g[g["status"] == "skip"]["reason"].unique()
        out.append(
            {
                "machine": key[0],
                "layer": key[1],
                "backend": key[2],
                "device": key[3],
                "dtype": key[4],
                "passed": int((per_case == "pass").sum()),
                "failed": int((per_case == "fail").sum()),
                "skipped": int((per_case == "skip").sum()),
                "worst_fwd_rel": float(fwd.max()) if len(fwd) else None,
                "worst_grad_rel": ", ".join(f"{k} {v:.1e}" for k, v in grads.items()) or None,
                "worst_err_over_bound": float(ran["bound_ratio"].max()) if len(ran) else None,
                "note": "; ".join(skips)[:80],
            }
        )
    return pd.DataFrame(out)


def speed_table(df):
    """One row per machine x device x dtype x case x pass x backend that ran."""
    s = _kind(df, "speed")
    if s.empty:
        return s
    s = s[s["status"] == "ok"]
    cols = [
        "machine",
        "device",
        "dtype",
        "layer",
        "case",
        "pass",
        "backend",
        "median_s",
        "p10_s",
        "p90_s",
        "noisy",
        "speedup",
        "paper_gamma",
        "model_gamma",
        "measured_over_model_gamma",
        "measured_over_paper_gamma",
        "gmacs_per_s",
        "roofline_fraction",
        "peak_memory_bytes",
        "speedups",
        "gammas",
        "over_gamma",
        "threads",
        "ftz",
        "subnormal_slowdown",
        "flags",
    ]
    return (
        s.reindex(columns=cols)
        .sort_values(["machine", "device", "layer", "case", "pass", "backend"])
        .reset_index(drop=True)
    )


def geomean_table(speed):
    """Geometric mean of the speed-up over torch-naive per machine x device x layer x backend x pass."""
    s = speed[speed["speedup"].notna() & (speed["backend"] != "torch-naive")]
    if s.empty:
        return s
    g = s.groupby(["machine", "device", "dtype", "layer", "backend", "pass"])
    return g.agg(
        cases=("speedup", "size"),
        geomean_speedup=("speedup", lambda v: float(np.exp(np.log(v).mean()))),
        geomean_meas_over_model_gamma=("measured_over_model_gamma", lambda v: float(np.exp(np.log(v).mean()))),
    ).reset_index()


def paper_check(speed):
    """DAU IJCV section 4.4 beside this run's dau-paper case."""
    rows = [
        {
            "source": f"paper ({PAPER['gpu']})",
            "backend": "DAU-ConvNet",
            "gamma": f"{PAPER['gamma']:g}",
            "forward speed-up": PAPER["inference"],
            "forward+backward speed-up": PAPER["training"],
        }
    ]
    s = (
        speed[(speed["layer"] == "dau") & (speed["case"] == "paper") & (speed["backend"] != "torch-naive")]
        if not speed.empty
        else speed
    )
    for (m, dev, b), g in s.groupby(["machine", "device", "backend"]) if not s.empty else []:
        up = g.groupby("pass")["speedup"].max()
        rows.append(
            {
                "source": f"{m}, {dev}",
                "backend": b,
                "gamma": f"{g['paper_gamma'].iloc[0]:g}",
                "forward speed-up": up.get("forward"),
                "forward+backward speed-up": up.get("forward+backward"),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- which should I use (ours against the peers)

CHOICE_NOTE = (
    "Per layer, case and pass where a peer (an external implementation, reference/README.md section 12) "
    "was timed: our fastest backend, the peer, torch-naive and conv2d-std, medians in one interleaved group "
    "(same machine, device, dtype, threads); x: the peer's time over ours (above 1: ours is faster); agrees: "
    "every case the backend ran in the correctness matrix of the same machine and dtype passed (section 9), "
    "PEER FAIL where a peer failed one. use: the faster of the two among those that agree. A stall "
    "(subnormal operands, flush-to-zero off) is shown as such, not as a speed."
)
BEFORE_SWITCHING = (
    "DCLS `v1` has no blur: our `dau` with a blur (the default, `ceil(3 sigma)`) is another function; only "
    "`blur_radius=0` maps to it.",
    "DCLS's position gradient is 0 at integer positions (ours is the derivative from the right), so "
    "positions that start on the grid do not move under DCLS.",
    "DCLS keeps positions inside its window (`clamp_parameters`) and renormalises there; our layers read the "
    "zero-extended plane at any displacement. Its non-square windows put the kernel off-centre.",
    "DCLS divides every element by its in-window sum + 1e-7 (ours by the sum), and its `gauss` scale is "
    "`|SIG| + 0.27`: it cannot go below 0.27.",
    "deform_conv2d has one set of positions per offset group of input channels, not per group of output "
    "channels (one call per group here).",
    "Both peers form the sampling coordinate before the bilinear weights: their rounding differs from ours "
    "near integer positions (reference/README.md section 9).",
)


def _agrees(corr, machine, backend, dtype, layer):
    """The correctness verdict of ``backend`` on ``layer`` in the same machine and dtype -> text."""
    if corr.empty:
        return "not checked"
    g = corr[
        (corr["machine"] == machine)
        & (corr["backend"] == backend)
        & (corr["dtype"] == dtype)
        & (corr["layer"] == layer)
    ]
    ran = g[g["status"] != "skip"]
    if ran.empty:
        return "not checked"
    bad = sorted(set(ran[ran["status"].isin(["fail", "error"])]["case"]))
    if bad:
        return ("PEER FAIL: " if backend in peers() else "FAIL: ") + ", ".join(bad)
    return f"yes ({ran['case'].nunique()} cases)"


def _stall(row):
    flags = row.get("flags") if isinstance(row.get("flags"), list) else []
    return next((f for f in flags if str(f).startswith("subnormal stall")), None)


def _contended(g):
    return any("contended" in (f if isinstance(f, list) else []) for f in g.get("flags", []))


def choice_table(df):
    """The "which should I use" table (``CHOICE_NOTE``): one row per peer per timed group."""
    s = _kind(df, "speed")
    if s.empty or "backend" not in s:
        return pd.DataFrame()
    corr = _kind(df, "correctness")
    mine = set(peers())
    out = []
    for key, g in s.groupby(["machine", "device", "dtype", "layer", "case", "pass"], sort=True):
        if not mine & set(g["backend"]):
            continue
        machine, _, dtype, layer, _, _ = key
        ok = g[g["status"] == "ok"].set_index("backend")
        ours = ok[~ok.index.isin(list(mine) + ["torch-naive", "reference"] + [b for b in ok.index if "conv2d" in b])]
        best = ours["median_s"].idxmin() if len(ours) else None
        for peer in sorted(mine & set(g["backend"])):
            rec = dict(zip(("machine", "device", "dtype", "layer", "case", "pass"), key))
            rec["ours best"] = best
            rec["ours ms"] = ours["median_s"].get(best) * 1e3 if best else None
            rec["ours agrees"] = _agrees(corr, machine, best, dtype, layer) if best else "-"
            rec["peer"] = peer
            row = g[g["backend"] == peer].iloc[0].to_dict()
            stall = _stall(row)
            if row["status"] != "ok":
                rec["peer ms"] = f"{row['status']}: {str(row.get('reason'))[:90]}"
            else:
                rec["peer ms"] = row["median_s"] * 1e3
            rec["x ours over peer"] = (
                row["median_s"] / ours["median_s"][best] if best and row["status"] == "ok" else None
            )
            rec["peer agrees"] = _agrees(corr, machine, peer, dtype, layer)
            for b, col in (("torch-naive", "torch-naive ms"), ("conv2d-std", "conv2d-std ms")):
                rec[col] = ok["median_s"].get(b) * 1e3 if b in ok.index else None
            rec["use"] = _use(rec, best, peer)
            rec["note"] = "; ".join(
                x
                for x in (
                    stall and f"peer {stall} (its unflushed time is a stall, not its speed)",
                    row.get("ftz") is not None and f"ftz {'on' if row.get('ftz') else 'off'}",
                    _contended(g) and "group contended (indicative only)",
                )
                if x
            )
            out.append(rec)
    return _drop_constant(pd.DataFrame(out))


def _use(rec, best, peer):
    good = lambda v: isinstance(v, str) and v.startswith("yes")  # noqa: E731
    x = rec["x ours over peer"]
    if x is None:
        return best if best and good(rec["ours agrees"]) else "-"
    ours_ok, peer_ok = good(rec["ours agrees"]), good(rec["peer agrees"])
    if ours_ok and (x >= 1 or not peer_ok):
        return best
    if peer_ok and (x < 1 or not ours_ok):
        return peer
    return "-"


def choice_md(table):
    if table.empty:
        return ""
    out = ["\n## Which should I use\n\n", CHOICE_NOTE + "\n\n", md_table(table), "\n### Before switching\n\n"]
    return "".join(out + [f"- {line}\n" for line in BEFORE_SWITCHING])


def choice_html(table):
    if table.empty:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in BEFORE_SWITCHING)
    return (
        f"<section id='choice'><h2>Which should I use</h2><p class='note'>{html.escape(CHOICE_NOTE)}</p>"
        f"{html_table(table, 'verdict')}<h3>Before switching</h3><ul>{items}</ul></section>"
    )


# ---------------------------------------------------------------- formatting


def _fmt(v):
    """One cell -> text; missing values (None, NaN, empty) -> "-"."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items()) or "-"
    if isinstance(v, (list, tuple)):
        return "; ".join(_fmt(x) for x in v) or "-"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v != 0 and float(f"{v:.6g}") == v:  # short exact values (10.125, 3.25) stay whole
            return f"{v:.6g}"
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    if isinstance(v, str) and not v.strip():
        return "-"
    return str(v)


def md_table(df):
    if df.empty:
        return "_(no rows)_\n"
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(_fmt(v) for v in row) + " |\n" for row in df.itertuples(index=False))


def html_table(df, cls=""):
    """DataFrame -> an HTML table with the same cell texts as the markdown ("-" for missing)."""
    if df.empty:
        return "<p>(no rows)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)

    def cell(v):
        numeric = isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
        return f"<td{'' if numeric else ' class=l'}>{html.escape(_fmt(v))}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _drop_constant(df, cols=("machine", "device")):
    """Drop label columns with one value (said once in the run line instead)."""
    return df.drop(columns=[c for c in cols if c in df and df[c].nunique() <= 1])


# ---------------------------------------------------------------- the verdict block


def _mark_peers(df):
    """A peer's name in a table -> "name (peer)": an external implementation, not ours."""
    if df.empty or "backend" not in df:
        return df
    mine = set(peers())
    return df.assign(backend=[f"{b} (peer)" if b in mine else b for b in df["backend"]])


def agreement_view(ran):
    if ran.empty:
        return ran
    ran = _mark_peers(ran)
    t = ran.rename(
        columns={
            "passed": "cases passed",
            "failed": "cases failed",
            "worst_fwd_rel": "worst forward rel. error",
            "worst_fwd_err_over_bound": "worst forward err/bound",
            "worst_case": "at",
            "failed_cases": "failed cases",
        }
    )
    return _drop_constant(t)


def not_run_view(not_run):
    if not_run.empty:
        return not_run
    g = _mark_peers(not_run).groupby(["backend", "reason"], sort=True)
    return pd.DataFrame(
        [
            {"backend": b, "not run on": ", ".join(sorted(set(x["device"] + " " + x["dtype"]))), "reason": r}
            for (b, r), x in g
        ]
    )


def gradient_view(table):
    """Per-layer gradient table -> one cell per parameter: "rel. error (err/bound)"."""
    keys = [c for c in ("machine", "backend", "device", "dtype") if c in table]
    out = table[keys].copy()
    for p in verdict.PARAMS:
        if f"{p} rel" in table:
            out[p] = [
                "-" if _fmt(r) == "-" else f"{r:.1e} ({_fmt(b)})"
                for r, b in zip(table[f"{p} rel"], table[f"{p} err/bound"])
            ]
    return _drop_constant(out)


SPEED_COLUMNS = {
    "best backend": "best",
    "x over torch-naive": "x naive",
    "gamma torch-naive": "gamma naive",
    "measured/gamma torch-naive": "meas/gamma naive",
    "x over conv2d-std": "x std",
    "gamma conv2d-std": "gamma std",
    "measured/gamma conv2d-std": "meas/gamma std",
    "x over conv2d-std-tf32": "x std tf32",
    "measured/gamma conv2d-std-tf32": "meas/gamma std tf32",
    "x over conv2d-std-fp16": "x std fp16",
    "x over conv2d-std-bf16": "x std bf16",
    "paper gamma": "paper gamma",
    "geomean x over torch-naive (all cases)": "geomean x naive",
    "cases": "cases",
    "excluded groups": "excluded",
}
SPEED_LEGEND = (
    "naive: `torch-naive`, the exact dense kernel; std: `conv2d-std`, a plain conv2d with the standard "
    "Ks x Ks kernel (timing only, what the paper compares against); x: measured speed-up of the best backend "
    "(largest over torch-naive) in the headline case; gamma: the cost model's MAC ratio over that baseline; "
    "paper gamma: Ks^2 / 4K (DAU IJCV Eq. 17); geomean: best speed-up over torch-naive, geometric mean over "
    "the layer's cases; excluded: groups flagged contended or implausible (not used). std runs in FP32 with "
    "TF32 off; on CUDA, std tf32 / fp16 / bf16 are the same conv2d with TF32 on and in half precision. "
    "reference/README.md section 8 defines all of them."
)


def speed_view(sp):
    if sp.empty:
        return sp
    t = sp.rename(columns=SPEED_COLUMNS)
    keep = ["machine", "device", "dtype", "layer", "pass", "case"] + list(SPEED_COLUMNS.values())
    t = t[[c for c in keep if c in t]]
    empty = {c: None for c in t.columns}

    def paper(pass_):
        """The paper's own measurement (DAU IJCV 4.4, over its 9 x 9 conv) as a row of this table."""
        up, g = verdict.PAPER[pass_], verdict.PAPER["gamma"]
        row = {"machine": "paper", "device": verdict.PAPER["gpu"], "dtype": "float32", "layer": "dau"}
        row.update({"pass": pass_, "case": "DAU IJCV 4.4", "best": "DAU-ConvNet", "x std": up})
        return {**empty, **row, "gamma std": g, "meas/gamma std": up / g, "paper gamma": g}

    rows = []
    for r in t.to_dict("records"):
        rows.append(r)
        if r["layer"] == "dau" and r["pass"] in ("forward", "forward+backward") and r["case"] == "paper":
            rows.append(paper(r["pass"]))
    if not any(r["layer"] == "dau" and r["case"] == "DAU IJCV 4.4" for r in rows):
        rows += [paper(p) for p in ("forward", "forward+backward")]
    out = pd.DataFrame(rows)
    # the CUDA-only baselines' columns only where some row measured them
    extra = [c for c in ("x std tf32", "meas/gamma std tf32", "x std fp16", "x std bf16") if c in out]
    return out.drop(columns=[c for c in extra if out[c].isna().all()])


def verdict_parts(v):
    """-> list of (title, note, table) of the verdict block, in order."""
    parts = [
        (
            "Agreement with the float64 reference",
            "Per backend x device x dtype over every layer and case; "
            "err/bound <= 1 passes (reference/README.md section 9).",
            agreement_view(v["agreement"]),
        )
    ]
    if not v["not_run"].empty:
        parts.append(("Not run here", "One line per backend, with its own reason.", not_run_view(v["not_run"])))
    for layer, t in v["gradients"].items():
        parts.append(
            (
                f"Gradient accuracy: {layer}",
                "Worst relative error (worst error / bound) over every case; the last row checks the reference's "
                "analytic gradients against float64 central differences (reference/README.md section 10).",
                gradient_view(t),
            )
        )
    parts.append(("Speed against gamma", SPEED_LEGEND, speed_view(v["speed"])))
    return parts


def verdict_md(v, run_line, brief=False):
    """The verdict block in markdown; ``brief`` (for ``verdict.md`` and the README) leaves the
    per-layer gradient tables to the report."""
    out = ["## Verdict\n\n", f"_{run_line}_\n\n"]
    out += [f"- **{verdict.MARK[o]}** {line}\n" for o, line in verdict.marked(v)]
    for title, note, table in verdict_parts(v):
        if brief and title.startswith("Gradient accuracy"):
            continue
        out += [f"\n### {title}\n\n{note}\n\n", md_table(table)]
    if brief and v["gradients"]:
        out.append("\nGradient accuracy per layer and parameter: the verdict of `report.md` / `report.html`.\n")
    return "".join(out)


def verdict_html(v, run_line):
    out = ["<section id='verdict'><h2>Verdict</h2>", f"<p class='run'>{html.escape(run_line)}</p>"]
    for o, line in verdict.marked(v):
        head, _, rest = line.partition(": ")
        cls = o.replace(" ", "-")
        out.append(
            f"<p class='answer {cls}'><span class='mark'>{verdict.MARK[o]}</span> "
            f"<b>{html.escape(head)}:</b> {html.escape(rest)}</p>"
        )
    grads = []
    for title, note, table in verdict_parts(v):
        if title.startswith("Gradient accuracy"):  # side by side, one note for all layers
            if not grads:
                out += [
                    "<h3>Gradient accuracy per layer and parameter</h3>",
                    f"<p class='note'>{html.escape(note)}</p>",
                ]
            grads.append(f"<div><h4>{html.escape(title.split(': ', 1)[1])}</h4>{html_table(table, 'verdict')}</div>")
            continue
        if grads:
            out.append("<div class='side'>" + "".join(grads) + "</div>")
            grads = []
        out += [f"<h3>{html.escape(title)}</h3><p class='note'>{html.escape(note)}</p>", html_table(table, "verdict")]
    if grads:
        out.append("<div class='side'>" + "".join(grads) + "</div>")
    out.append("</section>")
    return "\n".join(out)


# ---------------------------------------------------------------- writers


def _speed_compact(speed):
    if speed.empty:
        return speed
    t = speed.assign(median_ms=speed["median_s"] * 1e3)
    cols = [
        "machine",
        "device",
        "layer",
        "case",
        "pass",
        "backend",
        "median_ms",
        "noisy",
        "speedup",
        "speedups",
        "paper_gamma",
        "model_gamma",
        "gammas",
        "measured_over_model_gamma",
        "over_gamma",
        "gmacs_per_s",
        "roofline_fraction",
        "threads",
        "ftz",
        "subnormal_slowdown",
        "flags",
    ]
    return t.reindex(columns=cols)


def sections(df):
    """The detailed tables, after the verdict and the figures -> (dict title -> DataFrame, speed table)."""
    speed = speed_table(df)
    corr = correctness_table(df)
    fd = _kind(df, "fd")
    return {
        "Environment": environment_table(df),
        "Correctness matrix": _mark_peers(corr[corr["passed"] + corr["failed"] > 0]) if not corr.empty else corr,
        "Not run here (the backend's reason)": (
            corr[corr["passed"] + corr["failed"] == 0][["machine", "layer", "backend", "device", "dtype", "note"]]
            if not corr.empty
            else corr
        ),
        "Reference vs central differences (per case and parameter)": (
            fd[["layer", "case", "output", "status", "rel_err", "max_abs_err", "bound_ratio"]] if not fd.empty else fd
        ),
        "Paper check (DAU IJCV section 4.4)": paper_check(speed),
        "Speed-up, geometric means across cases": geomean_table(speed) if not speed.empty else speed,
        "Speed per case and pass": _mark_peers(_speed_compact(speed)),
    }, speed


STYLE = (
    "body{font-family:sans-serif;margin:1.5em 2em;max-width:1400px;line-height:1.35}"
    "table{border-collapse:collapse;font-size:12px;margin:.3em 0 1em}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}"
    "#verdict{border:2px solid #555;padding:.2em 1em 1em;background:#fafafa}"
    ".answer{font-size:15px;margin:.5em 0;padding-left:.6em;border-left:4px solid #888}"
    ".answer.pass{border-color:#2a6}.answer.fail{border-color:#c22}.answer.not-measured{border-color:#b80}"
    ".mark{font-weight:bold;font-size:12px;padding:1px 5px;border-radius:3px;color:#fff;background:#888}"
    ".pass .mark{background:#2a6}.fail .mark{background:#c22}.not-measured .mark{background:#b80}"
    ".run,.note,figcaption{color:#444;font-size:13px}figure{margin:1.5em 0}img{max-width:100%}"
    "details{margin:.4em 0}summary{cursor:pointer;font-weight:bold}"
    ".side{display:flex;flex-wrap:wrap;gap:0 1.5em}.side h4{margin:.4em 0 .1em}"
)
# Lets a headless browser (suites/test_report_browser.py) read how many figures decoded.
ONLOAD = (
    "<script>window.addEventListener('load',function(){var n=0;for(var i of document.images)"
    "{if(i.complete&&i.naturalWidth>0)n++;}document.body.setAttribute('data-images-decoded',n);});</script>"
)


VERDICT_JSON = "verdict.json"


def write_verdict_json(v, df, paths, path):
    """``verdict.json``: per question its outcome (pass / fail / not measured), the rule, the
    sentence and the figures behind it (``verdict.outcomes``), the overall outcome, the machines
    and the files it was computed from: what a CI job reads instead of the report."""
    import json

    out = verdict.outcomes(v)
    doc = {
        "schema": results.SCHEMA,
        "outcome": verdict.overall(out),
        "machines": sorted(set(df["machine"])) if "machine" in df else [],
        "files": list(paths),
        "questions": out,
    }
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1, default=str)
        fh.write("\n")


def write(paths, out_dir):
    """Write ``report.md``, ``report.html``, ``verdict.md``, ``verdict.json``, ``summary.csv`` and the PNG figures
    -> path of report.md."""
    os.makedirs(out_dir, exist_ok=True)
    df = frame(paths)
    secs, _ = sections(df)
    from . import figures  # matplotlib: only where a figure is drawn

    v = verdict.compute(df)
    figs = figures.all_figures(df, verdict.speed_rows(df), v["gradients"])
    for name, _, _, png in figs:
        with open(os.path.join(out_dir, name + ".png"), "wb") as fh:
            fh.write(png)
    machines = sorted(set(df["machine"])) if "machine" in df else []
    joined = f", merged from {len(machines)} machines ({'; '.join(machines)})" if len(machines) > 1 else ""
    run_line = f"From {len(paths)} result file(s), {len(df)} rows{joined}: {figures.run(df)}."
    intro = (
        f"Correctness tolerance: {TOLERANCE}. Speed-ups are measured within one group (same run, machine, "
        "device, dtype); averages are geometric. Definitions: reference/README.md in the repository."
    )
    with open(os.path.join(out_dir, "verdict.md"), "w") as fh:
        fh.write(verdict_md(v, run_line, brief=True))
    write_verdict_json(v, df, paths, os.path.join(out_dir, VERDICT_JSON))
    choice = choice_table(df)
    md = ["# rfbench report\n\n", intro + "\n\n", verdict_md(v, run_line), choice_md(choice), "\n## Figures\n"]
    for i, (name, title, caption, _) in enumerate(figs, 1):
        md.append(f"\n### Figure {i}. {title}\n\n![{title}]({name}.png)\n\n{caption}\n")
    md.append("\n## Detailed tables\n")
    for title, table in secs.items():
        md += [f"\n### {title}\n\n", md_table(table)]
    page = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>rfbench report</title>",
        f"<style>{STYLE}</style>{ONLOAD}</head><body>",
        "<h1>rfbench report</h1>",
        f"<p class='note'>{html.escape(intro)}</p>",
        verdict_html(v, run_line),
        choice_html(choice),
        "<section id='figures'><h2>Figures</h2>",
    ]
    for i, (name, title, caption, png) in enumerate(figs, 1):
        src = "data:image/png;base64," + base64.b64encode(png).decode()
        page.append(
            f"<figure id='fig-{name}'><img id='img-{name}' alt='{html.escape(title)}' src='{src}'>"
            f"<figcaption><b>Figure {i}. {html.escape(title)}.</b> {html.escape(caption)}</figcaption></figure>"
        )
    page.append("</section><section id='tables'><h2>Detailed tables</h2>")
    for title, table in secs.items():
        page.append(
            f"<details><summary>{html.escape(title)} ({len(table)} rows)</summary>{html_table(table)}</details>"
        )
    page.append("</section></body></html>")
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write("".join(md))
    with open(os.path.join(out_dir, "report.html"), "w") as fh:
        fh.write("\n".join(page))
    summary = pd.concat(
        [t.assign(table=name) for name, t in secs.items() if not t.empty and name != "Environment"], ignore_index=True
    )
    summary.to_csv(os.path.join(out_dir, "summary.csv"), index=False)
    return os.path.join(out_dir, "report.md")
