"""``rfbench compare A B``: the speed rows of two runs side by side, like with like only.

Two runs are comparable when what changes a timing other than the code is the same: the machine
kind (CPU model, its vector ISA, the GPU), the thread count, the device and the dtype.  The code
may differ (that is what one compares); it is shown.  Anything else that differs is named and
the comparison refused (exit 2) unless ``--force``.  Rows flagged contended or implausible are
left out and counted.

Per row (layer, case, pass, backend, device, dtype): the medians, the change in percent, and a
two-sided Mann-Whitney U test on the raw samples of both runs (``samples_s``): a change counts
only where it exceeds ``--fail-above`` (default 5%) and the test gives p < ``ALPHA``.  With 5
repetitions a side the smallest possible p is 0.008, so 5 samples can show a change; fewer cannot,
and the row then says "too few samples".  Exit 1 on a regression.
"""

import json
import math

from . import results

ALPHA = 0.05
# What must match between the two runs (the environment's key -> what it is called in a refusal).
SAME = {
    "cpu": "CPU model",
    "cpu_isa": "vector ISA",
    "gpu": "GPU",
}
ROW_SAME = {"threads": "thread count"}
KEY = ("layer", "case", "pass", "backend", "device", "dtype")


class NotComparable(ValueError):
    """The two runs differ in something besides the code: the message says what."""


def _speed(path):
    rows = [r for r in results.load([path]) if r.get("kind") == "speed" and r.get("status") == "ok"]
    if not rows:
        raise results.ResultsError(f"{path}: no speed rows that ran")
    return rows


def _excluded(r):
    return any(str(f).startswith(("contended", "implausible")) for f in r.get("flags") or [])


def _values(rows, get):
    return sorted({str(get(r)) for r in rows})


def differences(a, b):
    """What differs between runs ``a`` and ``b`` (speed rows) besides the code -> list of sentences."""
    out = []
    getters = [(what, lambda r, k=k: (r.get("env") or {}).get(k)) for k, what in SAME.items()]
    getters += [(what, lambda r, k=k: r.get(k)) for k, what in ROW_SAME.items()]
    for what, get in getters:
        va, vb = _values(a, get), _values(b, get)
        if va != vb:
            out.append(f"{what}: {', '.join(va)} vs {', '.join(vb)}")
    return out


def mann_whitney(x, y):
    """Two-sided p-value of the Mann-Whitney U test of samples ``x`` against ``y`` (exact for small
    samples through SciPy), or None with fewer than 3 samples a side."""
    if min(len(x), len(y)) < 3:
        return None
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)


def compare(path_a, path_b, fail_above=0.05, force=False):
    """-> dict: ``rows`` (one per key in both runs), ``differences``, ``code`` (a, b), ``excluded``
    and ``regressions`` counts.  Raises ``NotComparable`` unless the runs are like with like or ``force``."""
    a, b = _speed(path_a), _speed(path_b)
    diff = differences(a, b)
    if diff and not force:
        raise NotComparable("the runs are not comparable: " + "; ".join(diff) + " (--force compares them anyway)")
    by_a = {tuple(r[k] for k in KEY): r for r in a}
    by_b = {tuple(r[k] for k in KEY): r for r in b}
    rows, excluded = [], 0
    for key in sorted(set(by_a) & set(by_b)):
        ra, rb = by_a[key], by_b[key]
        if _excluded(ra) or _excluded(rb):
            excluded += 1
            continue
        change = rb["median_s"] / ra["median_s"] - 1 if ra["median_s"] else math.inf
        p = mann_whitney(ra.get("samples_s") or [], rb.get("samples_s") or [])
        if p is None:
            verdict = "too few samples"
        elif abs(change) <= fail_above or p >= ALPHA:
            verdict = "same"
        else:
            verdict = "REGRESSION" if change > 0 else "faster"
        rows.append(
            {
                **dict(zip(KEY, key)),
                "median_s_a": ra["median_s"],
                "median_s_b": rb["median_s"],
                "change_pct": 100 * change,
                "p_value": p,
                "verdict": verdict,
            }
        )
    code = tuple(", ".join(_values(x, lambda r: (r.get("key") or {}).get("code"))) for x in (a, b))
    return {
        "a": path_a,
        "b": path_b,
        "fail_above_pct": 100 * fail_above,
        "alpha": ALPHA,
        "differences": diff,
        "forced": bool(diff),
        "code": {"a": code[0], "b": code[1]},
        "excluded": excluded,
        "regressions": sum(r["verdict"] == "REGRESSION" for r in rows),
        "rows": rows,
    }


def text(res):
    """The comparison as a plain-text table with its header and summary line."""
    lines = [f"A: {res['a']} (code {res['code']['a']})", f"B: {res['b']} (code {res['code']['b']})"]
    if res["forced"]:
        lines.append("WARNING: compared although " + "; ".join(res["differences"]))
    head = (
        f"{'layer':<10} {'case':<14} {'pass':<17} {'backend':<16} {'A':>10} {'B':>10} {'change':>8} {'p':>7}  verdict"
    )
    lines += [head, "-" * len(head)]
    for r in res["rows"]:
        p = "-" if r["p_value"] is None else f"{r['p_value']:.3f}"
        lines.append(
            f"{r['layer']:<10} {r['case']:<14} {r['pass']:<17} {r['backend']:<16} {r['median_s_a'] * 1e3:>8.3f}ms "
            f"{r['median_s_b'] * 1e3:>8.3f}ms {r['change_pct']:>+7.1f}% {p:>7}  {r['verdict']}"
        )
    lines.append(
        f"{res['regressions']} regression(s) (slower by more than {res['fail_above_pct']:g}% at p < {res['alpha']}), "
        f"{len(res['rows'])} rows compared, {res['excluded']} left out as contended or implausible"
    )
    return "\n".join(lines)


def write_json(res, path):
    """The comparison as JSON (``-``: standard output)."""
    data = json.dumps(res, indent=1, default=str)
    if path == "-":
        print(data)
    else:
        with open(path, "w") as fh:
            fh.write(data + "\n")
