"""What ``rfbench matrix``, ``bench`` and ``all`` print: progress that also works when the output
is redirected, compact summaries (a backend that cannot run here is one line with its reason),
and the verdict lines with the report's path at the end.

``matrix`` and ``bench`` run without pandas and matplotlib (a machine where nothing can be
installed): their rows are written and summarised, and the verdict lines and the speed table,
computed with pandas, are replaced by one line saying so.
"""

import importlib.util
import sys
import time

import numpy as np

from . import eta, runner, verdict


def _no_pandas(what):
    """One line in place of ``what`` where pandas is missing, else None."""
    if importlib.util.find_spec("pandas") is not None:
        return None
    return f"({what}: needs pandas, not installed here; `rfbench report` on the rows needs pandas and matplotlib)"


def _clock(seconds):
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


class Progress:
    """``progress(i, total)`` after each finished group.

    On a terminal: one line rewritten in place.  Otherwise (a file, a pipe, CI logs): one
    flushed line per finished group, at most one every ``every_s`` seconds (the last group
    always), so an hour-long sweep shows where it is while it runs.  Each line gives the
    elapsed time and an estimate of the time left: the caller's (``left_s``: a speed sweep's,
    from the cost model and the rate measured so far, ``harness.eta``), else elapsed per item so
    far x items left.  ``begin(total, bound_s)`` (a sweep calls it before its first group) says
    how many groups there are and the most they may take, since no rate is known yet.
    """

    estimates = True  # a sweep passes its own estimate of the time left

    def __init__(self, label, stream=None, every_s=0.0, clock=time.monotonic):
        """Create it just before the work starts: the clock starts here."""
        self.label, self.stream, self.every_s, self.clock = label, stream, every_s, clock
        self.start, self.last = clock(), None

    def begin(self, total, bound_s=None):
        stream = self.stream or sys.stderr
        most = f"; at most about {_clock(bound_s)} (groups x budget)" if bound_s else ""
        stream.write(f"{self.label}: {total} group(s) to measure{most}; time left estimated after the first\n")
        stream.flush()

    def line(self, i, total, now, left_s=None):
        done = now - self.start
        left = done / max(i, 1) * (total - i) if left_s is None else left_s
        eta = "done" if i >= total else f"about {_clock(left)} left" if left >= 1 else "under 0:01 left"
        return f"{self.label}: {i}/{total} ({100 * i // max(total, 1)}%), {_clock(done)} elapsed, {eta}"

    def __call__(self, i, total, rows=None, left_s=None):
        """``rows``: the result rows of the group just finished (speed sweeps pass them)."""
        stream = self.stream or sys.stderr
        now = self.clock()
        text = self.line(i, total, now, left_s)
        if rows:
            text += " | " + group_line(rows)
        if stream.isatty():
            stream.write("\r" + text.ljust(79) + ("\n" if i == total else ""))
        elif i == total or self.last is None or now - self.last >= self.every_s:
            stream.write(text + "\n")
            self.last = now
        stream.flush()


def group_line(rows):
    """Speed rows of one group -> "dau-paper forward: numba 4.62x, torch-fast 2.27x over torch-naive
    (model gamma 21.0) [contended]"."""
    r0 = rows[0]
    ups = sorted(
        ((r.get("speedup"), r["backend"]) for r in rows if r.get("status") == "ok" and r.get("speedup")),
        key=lambda t: -t[0],
    )
    peers = verdict.peers()
    ups = [f"{b}{' (peer)' if b in peers else ''} {u:.2f}x" for u, b in ups if b not in verdict.BASELINES]
    text = f"{r0['layer']}-{r0['case']} {r0['pass']}: " + (
        ", ".join(ups) + " over torch-naive" if ups else "no speed-up"
    )
    gam = next((r.get("model_gamma") for r in rows if r.get("model_gamma")), None)
    if gam:
        text += f" (model gamma {gam:.1f})"
    flags = sorted(
        {
            f if str(f).startswith(verdict.EXCLUDING) else f"{r['backend']} {f}"
            for r in rows
            for f in (r.get("flags") or [])
            if str(f).startswith(verdict.EXCLUDING + ("subnormal stall",))
        }
    )
    over = eta.over_budget(rows)
    flags += [over] if over else []
    return text + (f" [{'; '.join(flags)}]" if flags else "")


def not_run_lines(rows):
    """Correctness or speed rows -> one line per backend that was refused everywhere it was
    asked to run: ``backend: not run on cpu float32, cpu float64 (reason)``."""
    ran, why = set(), {}
    for r in rows:
        b = r["backend"]
        if r.get("status") == "skip":
            why.setdefault(b, {}).setdefault(r.get("reason") or "", set()).add(f"{r['device']} {r['dtype']}")
        else:
            ran.add((b, f"{r['device']} {r['dtype']}"))
    out = []
    for b in sorted(why):
        for reason, where in sorted(why[b].items()):
            where = sorted(w for w in where if (b, w) not in ran)
            if where:
                out.append(f"{b}: not run on {', '.join(where)} ({reason})")
    return out


def matrix_summary(rows):
    """Correctness rows -> the summary table of the combinations that ran, one line per
    backend that did not run (with its reason), then the agreement and gradient verdicts."""
    summ = [s for s in runner.summary(rows) if s["passed"] + s["failed"] > 0]
    for s in summ:
        s["skip_reason"] = "" if not s["skipped"] else s["skip_reason"]
    missing = _no_pandas("the agreement and gradient verdict lines")
    tail = [missing] if missing else matrix_verdict(rows)
    return "\n".join([runner.format_summary(summ)] + not_run_lines(rows) + [""] + tail)


def matrix_verdict(rows):
    """The agreement and gradient verdict lines of correctness rows (no speed rows yet)."""
    import pandas as pd

    df = pd.DataFrame(rows).assign(machine="here")
    ran, not_run = verdict.agreement(df)
    return [verdict.agreement_line(ran, not_run), verdict.gradients_line(verdict.gradients(df))]


def bench_summary(rows):
    """Speed rows -> per layer x pass: the headline case's best backend, its speed-ups and gammas,
    the geometric mean over cases; then one line per backend that did not run.  The per-case
    table is in the report (and the results file)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    lines = []
    missing = _no_pandas("the speed summary per layer and pass") if ok else None
    if missing:
        lines.append(missing)
    elif ok:
        import pandas as pd

        from . import report

        df = pd.DataFrame(ok).assign(machine="here")
        table = verdict.speed(df)
        lines.append(
            f"{'layer':<10} {'pass':<17} {'case':<8} {'best':<11} {'x naive':>8} {'gamma':>7} "
            f"{'meas/g':>6} {'x std':>6} {'gamma':>6} {'geomean':>8} {'excl.':>5}"
        )
        f = lambda v, p=2: "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{p}f}"  # noqa: E731
        for r in table.to_dict("records"):
            lines.append(
                f"{r['layer']:<10} {r['pass']:<17} {r['case']:<8} {report._fmt(r['best backend']):<11} "
                f"{f(r['x over torch-naive']):>8} {f(r['gamma torch-naive'], 1):>7} "
                f"{f(r['measured/gamma torch-naive']):>6} {f(r['x over conv2d-std']):>6} "
                f"{f(r['gamma conv2d-std'], 1):>6} {f(r['geomean x over torch-naive (all cases)']):>8} "
                f"{f(r['excluded groups'], 0):>5}"
            )
        lines.append(
            "x naive / x std: speed-up over torch-naive / conv2d-std; gamma: the model's; geomean: over "
            "the layer's cases; excl.: groups flagged contended or implausible. Per-case table: the report."
        )
    return "\n".join(lines + not_run_lines(rows))


def verdict_lines(paths):
    """The three verdict sentences of the report on ``paths``."""
    return [line for _, line in verdict_marked(paths)]


def verdict_marked(paths):
    """``[(outcome, sentence)]`` of the report on ``paths`` (``verdict.marked``)."""
    from . import report

    return verdict.marked(verdict.compute(report.frame(paths)))


COLOUR = {verdict.PASS: "32", verdict.FAIL: "31", verdict.NOT_MEASURED: "33"}  # ANSI green, red, yellow


def mark(outcome, colour=False):
    """``PASS`` / ``FAIL`` / ``NOT MEASURED``, in its colour on a terminal (``colour``)."""
    word = verdict.MARK[outcome]
    return f"\033[1;{COLOUR[outcome]}m{word}\033[0m" if colour else word


def _colour(stream=None):
    """Colour only on a terminal, and never where NO_COLOR is set (no-color.org)."""
    import os

    stream = stream or sys.stdout
    return stream.isatty() and not os.environ.get("NO_COLOR")


def finish(paths, report_path, colour=None):
    """The end of ``rfbench all`` / ``report``: the verdict, each line led by its outcome, then
    where the report is."""
    colour = _colour() if colour is None else colour
    html = report_path[: -len(".md")] + ".html" if report_path.endswith(".md") else report_path
    return "\n".join(
        ["", "Verdict:"]
        + [f"- {mark(o, colour)} {line}" for o, line in verdict_marked(paths)]
        + [f"report: {html} (and report.md, verdict.md, verdict.json, summary.csv and the figures beside it)"]
    )
