"""Reports: results files (any number, any machines) -> ``report.md``, a self-contained
``report.html`` (figures embedded) and ``summary.csv``; and ``compare`` of two files.

Speed-ups are always ratios measured within one group (one run, one machine); averages
across cases are geometric means.
"""

import base64
import io
import math
import os

import numpy as np
import pandas as pd

from . import results

PAPER = {"gamma": 10.125, "inference": 3.25, "training": 12.54, "gpu": "RTX 2080 Ti"}
TOLERANCE = "|a-b| <= (u + u64) n sum|terms| per element (err/bound <= 1)"


def _machine(env):
    env = env or {}
    return f"{env.get('machine', '?')} ({env.get('gpu') or env.get('cpu', '?')})"


def frame(paths):
    """Rows of the results files -> DataFrame with a ``machine`` column."""
    rows = results.load(paths)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["machine"] = [_machine(e) if isinstance(e, dict) else "?" for e in df.get("env", [None] * len(df))]
    return df


def _kind(df, kind):
    return df[df["kind"] == kind].copy() if "kind" in df else pd.DataFrame()


def environment_table(df):
    keys = (
        "cpu",
        "cpu_count",
        "torch_threads",
        "gpu",
        "driver",
        "cuda",
        "torch",
        "numba",
        "numpy",
        "scipy",
        "cupy",
        "tf32_matmul",
        "tf32_cudnn",
        "git_commit",
    )
    out = {}
    for m, e in zip(df["machine"], df["env"]):
        if isinstance(e, dict) and m not in out:
            out[m] = {"machine": m, **{k: e.get(k) for k in keys}}
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
    ]
    return s[cols].sort_values(["machine", "device", "layer", "case", "pass", "backend"]).reset_index(drop=True)


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


# ---------------------------------------------------------------- figures


def _fig_bytes(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def figures(df, speed):
    """-> list of ``(name, title, png bytes)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    eff = speed[speed["speedup"].notna() & (speed["backend"] != "torch-naive")] if not speed.empty else speed
    if not eff.empty:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for ax, p in zip(axes, ("forward", "forward+backward")):
            sub = eff[eff["pass"] == p]
            for (b, dev), g in sub.groupby(["backend", "device"]):
                ax.scatter(g["model_gamma"], g["speedup"], label=f"{b} ({dev})", alpha=0.8)
            lim = [0.3, max(2.0, float(eff["model_gamma"].max()) * 1.5)]
            ax.plot(lim, lim, "k--", lw=1, label="y = x (speed-up = gamma)")
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="model gamma (naive MACs / efficient MACs)",
                ylabel="measured speed-up over torch-naive (x)",
                title=p,
            )
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        out.append(("speedup_vs_gamma", "Measured speed-up against the model gamma", _fig_bytes(fig)))
        plt.close(fig)

        sweeps = [
            ("dau", "side", "standard kernel side (px)"),
            ("dau", "k", "units K"),
            ("acu", "syn", "synapses K"),
            ("njet", "sigma", "sigma (px)"),
        ]
        fig, axes = plt.subplots(2, 2, figsize=(11, 8))
        for ax, (layer, prefix, label) in zip(axes.ravel(), sweeps):
            sub = eff[(eff["layer"] == layer) & eff["case"].str.match(prefix + r"[0-9.]+$")]
            for (b, dev, p), g in sub.groupby(["backend", "device", "pass"]):
                xv = g["case"].str[len(prefix) :].astype(float)
                order = np.argsort(xv.values)
                ax.plot(xv.values[order], g["speedup"].values[order], "o-", label=f"{b} ({dev}) {p}")
            gam = sub[sub["pass"] == "forward"].drop_duplicates("case")
            if not gam.empty:
                xv = gam["case"].str[len(prefix) :].astype(float)
                order = np.argsort(xv.values)
                ax.plot(xv.values[order], gam["model_gamma"].values[order], "k--", label="model gamma (forward)")
            ax.set(
                xlabel=label, ylabel="speed-up over torch-naive (x)", yscale="log", title=f"{layer}: sweep over {label}"
            )
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(("sweeps", "Speed-up along the sweeps of the paper grid", _fig_bytes(fig)))
        plt.close(fig)

    corr = _kind(df, "correctness")
    corr = corr[corr["bound_ratio"].notna()] if not corr.empty else corr
    if not corr.empty:
        corr = corr.assign(
            col=corr["layer"] + "-" + corr["case"], row=corr["backend"] + " " + corr["dtype"] + " " + corr["device"]
        )
        piv = corr.pivot_table(index="row", columns="col", values="bound_ratio", aggfunc="max")
        val = np.log10(np.maximum(piv.values.astype(float), 1e-6))
        fig, ax = plt.subplots(figsize=(max(8, 0.28 * piv.shape[1]), 0.45 * piv.shape[0] + 2))
        im = ax.imshow(val, aspect="auto", cmap="viridis", vmin=-6, vmax=1)
        ax.set_xticks(range(piv.shape[1]), piv.columns, rotation=90, fontsize=7)
        ax.set_yticks(range(piv.shape[0]), piv.index, fontsize=8)
        fig.colorbar(im, ax=ax, label="log10(worst error / rounding bound); > 0 fails")
        ax.set_title("Worst error over its rounding bound, forward and all gradients")
        out.append(("error_heatmap", "Error over the rounding bound, backend x case", _fig_bytes(fig)))
        plt.close(fig)

    gap = _kind(df, "gap")
    mug = _kind(df, "mu_grad")
    if not gap.empty or not mug.empty:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for sig, g in gap.groupby("sigma"):
            axes[0].plot(g["frac"], g["rel_gap"], "o-", label=f"sigma {sig:g}")
        axes[0].set(
            xlabel="fractional part of the displacement (px)",
            ylabel="||dau - dau_gauss|| / ||dau_gauss||",
            yscale="log",
            title="DAU approximation gap (efficient form vs Gaussian kernels)",
        )
        if not gap.empty:
            axes[0].legend(fontsize=7)
        axes[0].grid(True, which="both", alpha=0.3)
        if not mug.empty:
            axes[1].plot(mug["sigma"], mug["rel_diff"], "o-")
        axes[1].set(
            xlabel="sigma (px)",
            ylabel="||g_exact - g_eq16|| / ||g_eq16||",
            yscale="log",
            title="Exact vs Gaussian (Eq. 16) displacement gradient",
        )
        axes[1].grid(True, which="both", alpha=0.3)
        out.append(("dau_approximations", "DAU approximation gap and the two displacement gradients", _fig_bytes(fig)))
        plt.close(fig)
    return out


# ---------------------------------------------------------------- writers


def _fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def md_table(df):
    if df.empty:
        return "_(no rows)_\n"
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(_fmt(v) for v in row) + " |\n" for row in df.itertuples(index=False))


def _speed_compact(speed):
    if speed.empty:
        return speed
    t = speed.assign(median_ms=speed["median_s"] * 1e3)
    return t[
        [
            "machine",
            "device",
            "layer",
            "case",
            "pass",
            "backend",
            "median_ms",
            "noisy",
            "speedup",
            "paper_gamma",
            "model_gamma",
            "measured_over_model_gamma",
            "gmacs_per_s",
            "roofline_fraction",
        ]
    ]


def sections(df):
    speed = speed_table(df)
    corr = correctness_table(df)
    return {
        "Environment": environment_table(df),
        "Correctness matrix": corr[corr["passed"] + corr["failed"] > 0] if not corr.empty else corr,
        "Not run here (the backend's reason)": (
            corr[corr["passed"] + corr["failed"] == 0][["machine", "layer", "backend", "device", "dtype", "note"]]
            if not corr.empty
            else corr
        ),
        "Paper check (DAU IJCV section 4.4)": paper_check(speed),
        "Speed-up, geometric means across cases": geomean_table(speed) if not speed.empty else speed,
        "Speed per case and pass": _speed_compact(speed),
    }, speed


def write(paths, out_dir):
    """Write ``report.md``, ``report.html``, ``summary.csv`` and the PNG figures -> path of report.md."""
    os.makedirs(out_dir, exist_ok=True)
    df = frame(paths)
    secs, speed = sections(df)
    figs = figures(df, speed)
    for name, _, png in figs:
        with open(os.path.join(out_dir, name + ".png"), "wb") as fh:
            fh.write(png)
    intro = (
        f"Results from {len(paths)} file(s), {len(df)} rows. Correctness tolerance: {TOLERANCE}. "
        "Speed-ups are over torch-naive measured in the same run on the same machine; averages are geometric."
    )
    md = ["# rfbench report\n", intro + "\n"]
    html = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rfbench report</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}",
        "</style></head><body><h1>rfbench report</h1>",
        f"<p>{intro}</p>",
    ]
    for title, table in secs.items():
        md += [f"\n## {title}\n\n", md_table(table)]
        html += [
            f"<h2>{title}</h2>",
            table.to_html(index=False, na_rep="-", float_format=_fmt) if not table.empty else "<p>(no rows)</p>",
        ]
    md.append("\n## Figures\n")
    html.append("<h2>Figures</h2>")
    for name, title, png in figs:
        md.append(f"\n### {title}\n\n![{title}]({name}.png)\n")
        html.append(f"<h3>{title}</h3><img alt='{title}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    html.append("</body></html>")
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write("".join(md))
    with open(os.path.join(out_dir, "report.html"), "w") as fh:
        fh.write("\n".join(html))
    summary = pd.concat(
        [t.assign(table=name) for name, t in secs.items() if not t.empty and name != "Environment"], ignore_index=True
    )
    summary.to_csv(os.path.join(out_dir, "summary.csv"), index=False)
    return os.path.join(out_dir, "report.md")


def compare(path_a, path_b):
    """Speed rows of two results files side by side: ratio B / A of the medians per row,
    a regression flagged when B is slower by more than the noise measured in both files
    (IQR / median of A plus that of B). -> DataFrame"""
    key = ["layer", "case", "pass", "backend", "device", "dtype"]
    a, b = speed_table(frame([path_a])), speed_table(frame([path_b]))
    if a.empty or b.empty:
        return pd.DataFrame()
    noise = lambda t: (t["p90_s"] - t["p10_s"]) / t["median_s"] / 2  # noqa: E731
    a = a.assign(noise=noise(a))[key + ["median_s", "noise"]]
    b = b.assign(noise=noise(b))[key + ["median_s", "noise"]]
    m = a.merge(b, on=key, suffixes=("_a", "_b"))
    m["ratio_b_over_a"] = m["median_s_b"] / m["median_s_a"]
    m["threshold"] = 1 + m["noise_a"] + m["noise_b"]
    m["verdict"] = np.where(
        m["ratio_b_over_a"] > m["threshold"],
        "REGRESSION",
        np.where(m["ratio_b_over_a"] < 1 / m["threshold"], "faster", "same"),
    )
    return m
