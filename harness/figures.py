"""The report's figures, drawn from result rows: each returns ``(name, title, caption, png)``
or None when its rows are absent.  Captions say what the figure shows and which run made it
(``run`` below: machine, commit, time the rows were written, seed).
"""

import io

import numpy as np
from matplotlib.patches import Patch, Rectangle

from . import baselines, verdict

PASS_MARKER = {"forward": "o", "backward": "s", "forward+backward": "^"}
PASS_LINE = {"forward": "-", "backward": "--", "forward+backward": ":"}
DTYPE_MARKER = {"float32": "o", "float64": "s", "float16": "D", "bfloat16": "v"}
FD_LABEL = "reference vs central differences"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def colours(names):
    """A fixed colour per name (backends keep their colour from figure to figure)."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    return {n: palette[i % len(palette)] for i, n in enumerate(sorted(set(names)))}


def _seeds(df):
    """The data seeds, each named by the rows it seeded: "seed 1 (speed), seed 1064045320 (correctness)"."""
    kinds = {}
    for kind, seed in zip(df.get("kind", ["rows"] * len(df)), df["seed"]):
        if seed is not None and seed == seed:
            kinds.setdefault(int(seed), set()).add(str(kind))
    return ", ".join(f"seed {s} ({', '.join(sorted(k))})" for s, k in sorted(kinds.items()))


def run(df):
    """Which run made these rows -> "machine, commit abc1234, written 2026-11-21 06:24-06:35 UTC, seed 1
    (speed)": ``_seeds`` names what each seed seeded."""
    if df.empty:
        return "no rows"
    bits = [", ".join(sorted(set(df["machine"])))]
    commits = sorted({str(e.get("git_commit"))[:7] for e in df["env"] if isinstance(e, dict) and e.get("git_commit")})
    if commits:
        bits.append("commit " + ", ".join(commits))
    if "written" in df and df["written"].notna().any():
        w = sorted(df["written"].dropna())
        a, b = w[0].replace("T", " ").rstrip("Z"), w[-1].replace("T", " ").rstrip("Z")
        bits.append(
            f"written {a[:16]}" + (f" to {b[11:16] if a[:10] == b[:10] else b[:16]}" if b != a else "") + " UTC"
        )
    if "seed" in df and df["seed"].notna().any():
        bits.append(_seeds(df))
    return ", ".join(bits)


# ---------------------------------------------------------------- speed


# Legend text of the speed figures: 11 pt at 110 dpi is 17 px in the PNG, about 14 px where the report
# shows figure 1 (1628 px wide) at 1400 px; at 8 pt it was about 10 px, too small to read.
LEGEND_PT = 11


def speedup_vs_gamma(speed):
    """Measured speed-up against the model gamma, one panel per baseline, log-log with y = x."""
    if speed.empty:
        return None
    plt = _plt()
    eff = verdict.efficient(speed)
    dropped = verdict.split_excluded(eff)[1]
    # the two baselines of the model gamma (the half-precision and TF32 variants: the speed table)
    bases = [b for b in (baselines.NAIVE, baselines.STD) if verdict.has(eff, b).any()]
    if not bases:
        return None
    col = colours(eff["backend"] + " (" + eff["device"] + ")")
    fig, axes = plt.subplots(1, len(bases), figsize=(6.2 * len(bases) + 2.4, 5), squeeze=False)
    top = 2.0
    for ax, b in zip(axes[0], bases):
        for (backend, dev, pass_), g in eff.groupby(["backend", "device", "pass"]):
            pts = [
                (gm.get(b), o.get(b), bool(e), case == "paper")
                for gm, o, e, case in zip(g["gamma"], g["over"], g["excluded"], g["case"])
            ]
            pts = [p for p in pts if p[0] and p[1]]
            for hollow in (False, True):
                for paper in (False, True):  # our paper case: large, ringed in black, drawn on top
                    sel = [p for p in pts if p[2] == hollow and p[3] == paper]
                    if not sel:
                        continue
                    x, y, _, _ = zip(*sel)
                    c = col[f"{backend} ({dev})"]
                    face = "none" if hollow else c
                    ax.scatter(
                        x,
                        y,
                        facecolors=face,
                        edgecolors="k" if paper else c,
                        linewidths=1.8 if paper else 1.0,
                        marker=PASS_MARKER.get(pass_, "x"),
                        s=130 if paper else 36,
                        alpha=0.95 if paper else 0.85,
                        zorder=3 if paper else 2,
                    )
                    top = max(top, max(x), max(y))
        if b == bases[-1]:  # the paper's figures are over a standard conv: the conv2d-std panel when drawn
            gam = verdict.PAPER["gamma"]
            ax.scatter([gam], [verdict.PAPER["forward"]], marker="o", s=150, c="gold", edgecolors="k", zorder=4)
            ax.scatter(
                [gam], [verdict.PAPER["forward+backward"]], marker="^", s=170, c="gold", edgecolors="k", zorder=4
            )
            note = "paper" if b == "conv2d-std" else "paper (over its 9 x 9 conv, not torch-naive)"
            ax.annotate(
                note, (gam, verdict.PAPER["forward+backward"]), textcoords="offset points", xytext=(9, 4), fontsize=8
            )
        lim = [0.2, top * 2]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set(
            xscale="log",
            yscale="log",
            xlim=lim,
            ylim=[min(0.03, lim[0]), lim[1]],
            xlabel=f"model gamma over {b} (MACs of {b} / MACs of the efficient algorithm)",
            ylabel=f"measured speed-up over {b} (x)",
            title=f"baseline: {b}",
        )
        ax.grid(True, which="both", alpha=0.3)
    h = [Patch(color=c, label=k) for k, c in col.items()]
    h += [plt.Line2D([], [], ls="", marker=m, c="grey", label=p) for p, m in PASS_MARKER.items()]
    h += [
        plt.Line2D([], [], ls="", marker="o", mfc="none", mec="grey", label="hollow: excluded (contended/implausible)"),
        plt.Line2D(
            [], [], ls="", marker="o", mfc="grey", mec="k", mew=1.8, ms=11, label="large, ringed: our paper case"
        ),
        plt.Line2D([], [], ls="--", c="k", label="y = x (speed-up = gamma)"),
        plt.Line2D([], [], ls="", marker="o", c="gold", mec="k", ms=10, label="paper: 3.25x forward, gamma 10.125"),
        plt.Line2D([], [], ls="", marker="^", c="gold", mec="k", ms=10, label="paper: 12.54x forward+backward"),
    ]
    fig.legend(handles=h, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=LEGEND_PT, frameon=False)
    fig.tight_layout()
    caption = (
        "Each point is one case and pass of the speed sweep: the measured speed-up of an efficient backend over the "
        "named baseline (medians timed interleaved in one process) against the cost model's gamma for that baseline "
        "(reference/README.md section 8). Points on the dashed line reach the model; below it the efficient "
        "algorithm runs at a lower MAC rate than the baseline. Gold: DAU-ConvNet's own measurement (DAU IJCV "
        "section 4.4), which is over a standard 9 x 9 conv2d at the paper's gamma, i.e. against the conv2d-std "
        "baseline; it is drawn on the torch-naive panel only when no conv2d-std rows exist."
    )
    if len(dropped):
        caption += (
            f" Hollow markers: {dropped['group'].nunique()} groups flagged contended or implausible, drawn for "
            "reference and left out of the verdict."
        )
    return (
        "speedup_vs_gamma",
        "Measured speed-up against the model gamma",
        caption + f" Run: {run(speed)}.",
        _png(fig),
    )


SWEEPS = (
    ("dau", "side", "standard kernel side Ks (px)"),
    ("dau", "k", "units per channel pair K"),
    ("acu", "syn", "synapses K"),
    ("acu", "spread", "position spread (px)"),
    ("njet", "sigma", "sigma (px)"),
    ("njet", "order", "basis order"),
)


def sweeps(speed):
    """Speed-up over torch-naive along each sweep of the paper grid, with the model gamma per pass."""
    if speed.empty:
        return None
    plt = _plt()
    eff = verdict.efficient(speed)
    eff = eff[verdict.has(eff, "torch-naive")]
    panels = [
        (layer, prefix, label, eff[(eff["layer"] == layer) & eff["case"].str.fullmatch(prefix + r"[0-9.]+")])
        for layer, prefix, label in SWEEPS
    ]
    panels = [p for p in panels if not p[3].empty]
    if not panels:
        return None
    col = colours(eff["backend"] + " (" + eff["device"] + ")")
    ncol = 3 if len(panels) > 4 else 2 if len(panels) > 1 else 1
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.8 * nrow), squeeze=False)
    for ax, (layer, prefix, label, sub) in zip(axes.ravel(), panels):
        xv = sub["case"].str[len(prefix) :].astype(float)
        sub = sub.assign(xv=xv.values).sort_values("xv")
        for (backend, dev, pass_), g in sub.groupby(["backend", "device", "pass"]):
            c, up = col[f"{backend} ({dev})"], g["over"].map(lambda o: o["torch-naive"])
            ax.plot(g["xv"], up, ls="-", lw=1, c=c)
            hollow = np.array([bool(e) for e in g["excluded"]])
            for mask, face in ((~hollow, c), (hollow, "none")):
                if mask.any():
                    ax.scatter(
                        g["xv"][mask],
                        up[mask],
                        marker=PASS_MARKER.get(pass_, "x"),
                        s=25,
                        facecolors=face,
                        edgecolors=c,
                        zorder=3,
                    )
        for pass_, g in sub.drop_duplicates(["case", "pass"]).groupby("pass"):
            ax.plot(
                g["xv"], g["gamma"].map(lambda m: m.get("torch-naive")), c="k", lw=1.3, ls=PASS_LINE.get(pass_, "-.")
            )
        ax.set(xlabel=label, ylabel="speed-up over torch-naive (x)", yscale="log", title=f"{layer}: {label}")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    h = [Patch(color=c, label=k) for k, c in col.items()]
    h += [plt.Line2D([], [], ls="", marker=m, c="grey", label=f"measured, {p}") for p, m in PASS_MARKER.items()]
    h += [plt.Line2D([], [], ls=ls, c="k", label=f"model gamma, {p}") for p, ls in PASS_LINE.items()]
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles=h, loc="lower center", ncol=min(len(h), 5), fontsize=LEGEND_PT, frameon=False)
    caption = (
        "Measured speed-up of each efficient backend over torch-naive (colour: backend, marker: pass) along the "
        "sweeps of the paper grid, with the cost model's gamma for each pass in black (solid forward, dashed "
        "backward, dotted forward+backward). The gap between a backend's markers and the black line of the same pass "
        "is the fraction of the model speed-up it realises. Hollow markers: groups flagged contended or "
        f"implausible (left out of the verdict). Run: {run(speed)}."
    )
    return ("sweeps", "Speed-up along the sweeps, with the model gamma of each pass", caption, _png(fig))


# ---------------------------------------------------------------- accuracy


def _empty_case(cf):
    return isinstance(cf, dict) and cf.get("n") == 0


def error_heatmap(df):
    """Worst error over its rounding bound per backend x case; exact and no-data cells drawn apart."""
    c = df[df["kind"] == "correctness"] if "kind" in df else df.iloc[0:0]
    if c.empty:
        return None
    plt = _plt()
    c = c.assign(col=c["layer"] + "-" + c["case"], row=c["backend"] + " " + c["dtype"] + " " + c["device"])
    if c["machine"].nunique() > 1:
        c = c.assign(row=c["machine"] + ": " + c["row"])
    ran = c[c["bound_ratio"].notna() & ~c["case_fields"].map(_empty_case)]
    if ran.empty:
        return None
    rows = sorted(set(ran["row"]))
    cols = sorted(set(c["col"]))
    piv = ran.pivot_table(index="row", columns="col", values="bound_ratio", aggfunc="max").reindex(
        index=rows, columns=cols
    )
    val = piv.values.astype(float)
    with np.errstate(divide="ignore"):
        logv = np.log10(val)
    shown = np.ma.masked_invalid(np.where(val > 0, np.maximum(logv, -6), np.nan))
    cmap = plt.get_cmap("viridis").with_extremes(over="#d62728")
    fig, ax = plt.subplots(figsize=(max(8, 0.26 * len(cols) + 3), 0.42 * len(rows) + 2.6))
    im = ax.imshow(shown, aspect="auto", cmap=cmap, vmin=-6, vmax=0, interpolation="nearest")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isnan(val[i, j]):
                ax.add_patch(
                    Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#e6e6e6", edgecolor="#b0b0b0", hatch="///", lw=0)
                )
            elif val[i, j] == 0:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white", edgecolor="#c0c0c0", lw=0.5))
                ax.text(j, i, "0", ha="center", va="center", fontsize=6, color="#606060")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    fig.colorbar(im, ax=ax, extend="max", label="log10(worst error / rounding bound); red: > 1, fails")
    ax.legend(
        handles=[
            Patch(facecolor="white", edgecolor="#909090", label="exact: error 0"),
            Patch(
                facecolor="#e6e6e6", edgecolor="#b0b0b0", hatch="///", label="no data: not run, or empty output (N = 0)"
            ),
            Patch(facecolor="#d62728", label="fails: error above its bound"),
        ],
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    ax.set_title("Worst error over its rounding bound, forward and every gradient", pad=26)
    caption = (
        "Each cell is the largest |backend - reference| / bound over the forward and every gradient of one case "
        "(bound: reference/README.md section 9; values below 1e-6 drawn at 1e-6). White cells marked 0 are exact; "
        "hatched grey cells have no data (the backend refused the case, or the case has no output elements). "
        f"Backends that ran no case at all are listed in the verdict, not here. Run: {run(c)}."
    )
    return ("error_heatmap", "Error over the rounding bound, backend x case", caption, _png(fig))


def gradient_accuracy(grads, df):
    """Per layer and parameter: worst relative error and worst error over bound, per backend and dtype,
    with the reference's central-difference check."""
    if not grads:
        return None
    plt = _plt()
    layers = list(grads)
    backends = sorted({b for t in grads.values() for b in t["backend"] if b not in ("reference", FD_LABEL)})
    col = colours(backends)
    fig, axes = plt.subplots(2, len(layers), figsize=(3.6 * len(layers) + 2.5, 7.2), squeeze=False, sharey="row")
    floor = 1e-18
    for j, layer in enumerate(layers):
        t = grads[layer]
        params = [p for p in verdict.PARAMS if f"{p} rel" in t]
        series = [(r, r["backend"]) for r in t.to_dict("records") if r["backend"] != "reference"]
        width = 0.8 / max(len(series), 1)
        for i, (metric, ax) in enumerate(zip(("rel", "err/bound"), axes[:, j])):
            for k, (r, b) in enumerate(series):
                xs = np.arange(len(params)) - 0.4 + width * (k + 0.5)
                ys = np.array([r.get(f"{p} {metric}") for p in params], dtype=float)
                ys = np.where(ys > 0, ys, np.nan) if metric == "err/bound" else np.maximum(ys, floor)
                if b == FD_LABEL:
                    ax.scatter(xs, ys, marker="x", c="k", s=40, zorder=3)
                else:
                    ax.scatter(xs, ys, marker=DTYPE_MARKER.get(r["dtype"], "x"), c=col[b], s=28, zorder=3)
            if metric == "err/bound":
                ax.axhline(1.0, c="#d62728", lw=1)
            ax.set_xticks(range(len(params)), params, fontsize=8)
            ax.set_yscale("log")
            ax.grid(True, axis="y", which="major", alpha=0.3)
            if i == 0:
                ax.set_title(layer)
            if j == 0:
                ax.set_ylabel("worst relative error" if metric == "rel" else "worst error / bound (fails > 1)")
    h = [Patch(color=c, label=b) for b, c in col.items()]
    h += [
        plt.Line2D([], [], ls="", marker=m, c="grey", label=d)
        for d, m in DTYPE_MARKER.items()
        if any(d in set(t["dtype"]) for t in grads.values())
    ]
    h += [
        plt.Line2D([], [], ls="", marker="x", c="k", label="reference vs float64 central differences"),
        plt.Line2D([], [], c="#d62728", label="bound (err/bound = 1)"),
    ]
    fig.legend(handles=h, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    caption = (
        "Top: worst normwise relative error of each gradient over every case, per backend (colour) and dtype "
        "(marker); bottom: the same as worst error over its rounding bound (reference/README.md section 9). Black "
        "crosses: the float64 reference's analytic gradients against central differences, over the bound of "
        "reference/README.md section 10 (truncation and rounding of the difference quotient). "
        f"Run: {run(df[df['kind'].isin(['correctness', 'fd'])])}."
    )
    return ("gradient_accuracy", "Gradient accuracy per parameter", caption, _png(fig))


def dau_approximations(df):
    """The float64 studies of harness.analysis: approximation gap and the two displacement gradients."""
    gap = df[df["kind"] == "gap"] if "kind" in df else df.iloc[0:0]
    mug = df[df["kind"] == "mu_grad"] if "kind" in df else df.iloc[0:0]
    if gap.empty and mug.empty:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for sig, g in gap.groupby("sigma"):
        axes[0].plot(g["frac"], g["rel_gap"], "o-", ms=4, label=f"sigma {sig:g}")
    axes[0].set(
        xlabel="fractional part of the displacement (px)",
        ylabel="||dau - dau_gauss|| / ||dau_gauss||",
        yscale="log",
        title="DAU efficient form vs Gaussian kernels",
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
    fig.tight_layout()
    caption = (
        "Left: how far the efficient DAU form (blur, then bilinear shift) is from the Gaussian-kernel form on the "
        "same parameters, against the displacement's fractional part; zero at integer displacements "
        "(reference/README.md sections 2-3). Right: relative difference between the exact displacement gradient "
        "and DAU IJCV Eq. 16 against sigma. Float64 reference only, no backend involved. "
        f"Run: {run(df[df['kind'].isin(['gap', 'mu_grad'])])}."
    )
    return ("dau_approximations", "DAU approximation gap and the two displacement gradients", caption, _png(fig))


def all_figures(df, speed, grads):
    """-> list of ``(name, title, caption, png)`` for the figures whose rows are present."""
    figs = [
        speedup_vs_gamma(speed),
        sweeps(speed),
        error_heatmap(df),
        gradient_accuracy(grads, df),
        dau_approximations(df),
    ]
    return [f for f in figs if f is not None]
