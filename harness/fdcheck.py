"""The reference's analytic gradients against float64 central differences, as result rows.

One row per layer x case x parameter (``kind: "fd"``, ``backend: "reference"``, float64, cpu),
in the schema of ``runner.ROW_FIELDS``, so the report shows the truth's own check beside the
backends' agreement with it.  The bound is derived in reference/README.md section 10: the
Richardson estimate of the truncation error, the rounding of the two loss evaluations over
the step, and the rounding of the step itself; ``bound_ratio <= 1`` passes.
"""

import numpy as np

from .. import reference

from . import cases, metrics, runner

H = 1e-6
U64 = metrics.EPS["float64"]

# Small on purpose: every element of every argument costs four forwards.
CASES = (
    cases.Case("fd", "dau", n=2, s=2, f=2, h=5, w=6, k=2, sigma=0.8, spread=4.0),
    cases.Case("fd-stride2", "dau", n=1, s=2, f=2, h=6, w=5, k=2, sigma=1.1, spread=3.0, stride=2, radius=2),
    cases.Case("fd", "dau_gauss", n=2, s=2, f=2, h=5, w=6, k=2, sigma=0.9, spread=2.0, radius=3),
    cases.Case("fd-per-unit", "dau_gauss", n=1, s=2, f=2, h=5, w=5, k=2, sigma=0.9, radius=2, per_unit_sigma=True),
    cases.Case("fd", "acu", n=2, s=2, f=2, h=5, w=6, k=4, spread=2.5),
    cases.Case("fd-groups", "acu", n=1, s=2, f=4, h=5, w=5, k=3, groups=2, stride=2),
    cases.Case("fd", "njet", n=2, s=2, f=2, h=6, w=5, order=3, sigma=1.2),
    cases.Case("fd-stride2", "njet", n=1, s=2, f=2, h=6, w=7, order=2, sigma=0.7, stride=2, radius=3),
    # channel groups: two groups of dau, depthwise dau_gauss and njet (the shared sigma's gradient summed)
    cases.Case("fd-groups2", "dau", n=1, s=2, f=4, h=5, w=5, k=2, sigma=0.8, spread=3.0, channel_groups=2),
    cases.Case("fd-depthwise", "dau_gauss", n=1, s=2, f=2, h=5, w=5, k=2, sigma=0.9, radius=2, channel_groups=2),
    cases.Case("fd-depthwise", "njet", n=1, s=2, f=2, h=5, w=6, order=2, sigma=0.9, channel_groups=2),
)

POSITIONS = ("mu_x", "mu_y", "pos_x", "pos_y")


def away_from_integers(arrays, margin=2e-3):
    """Positions moved at least ``margin`` from integers: the bilinear forward has kinks there
    (reference/README.md section 1), and a difference straddling one measures no derivative."""
    out = dict(arrays)
    for name in POSITIONS:
        if name in out:
            v = out[name]
            out[name] = np.floor(v) + np.clip(v - np.floor(v), margin, 1 - margin)
    return out


def check(case, seed=0, h=H):
    """Central differences of ``L = sum(dy * forward)`` for every argument of ``case`` -> dict
    name -> ``(analytic, fd, bound)``, arrays of the argument's shape."""
    layer = reference.LAYERS[case.layer]
    arrays = away_from_integers(case.arrays(seed))
    rng = np.random.default_rng([case.seed, seed, 11])
    dy = rng.standard_normal(case.out_shape())
    hp = case.hparams()
    grads = layer.backward(**arrays, dy=dy, **case.backward_hparams())
    fwd = lambda **a: layer.forward(**a, **hp)  # noqa: E731
    # Rounding of one loss evaluation: each output element carries at most n_terms u64 of its
    # sum|terms|, and the final sum over dy * y adds one term per element.
    y_abs = layer.forward(**arrays, **hp, absolute=True)
    n_y = metrics.n_terms(case, "forward") + y_abs.size
    loss_err = n_y * U64 * float(np.sum(np.abs(dy) * y_abs))
    out = {}
    for name in layer.tensors:
        if arrays.get(name) is None:
            continue
        fd = reference.central_diff(fwd, arrays, name, dy, h)
        fd2 = reference.central_diff(fwd, arrays, name, dy, 2 * h)
        p = np.abs(np.asarray(arrays[name], dtype=np.float64))
        # |D(h) - D(2h)| is three times the O(h^2) truncation estimate of D(h); loss_err / h is
        # the rounding of (L+ - L-) / 2h; 2 u64 |p| / h the relative error of the rounded step.
        bound = np.abs(fd - fd2) + loss_err / h + 2 * U64 * p / h * np.abs(fd)
        out[name] = (np.asarray(grads[name], dtype=np.float64), fd, bound)
    return out


def case_rows(case, seed=0):
    """One ``kind: "fd"`` row per argument of ``case``."""
    rows = []
    for name, (a, fd, bound) in check(case, seed).items():
        diff = np.atleast_1d(np.abs(a - fd))
        ratio = float(np.max(np.where(diff == 0, 0.0, diff / np.atleast_1d(bound)), initial=0.0))
        nfd = np.linalg.norm(fd)
        rel = float(np.linalg.norm(diff) / nfd) if nfd > 0 else float(diff.max(initial=0.0))
        row = dict.fromkeys(runner.ROW_FIELDS)
        row.update(
            kind="fd",
            layer=case.layer,
            backend="reference",
            device="cpu",
            dtype="float64",
            case=case.name,
            output=name,
            status="pass" if ratio <= 1.0 else "fail",
            reason="analytic gradient vs float64 central differences (h = %g)" % H,
            rel_err=rel,
            max_abs_err=float(diff.max(initial=0.0)),
            bound_ratio=ratio,
            seed=seed,
            case_fields=case.fields(),
        )
        rows.append(row)
    return rows


def rows(seed=0, grid=CASES, progress=None):
    """Rows of every case in ``grid`` (``progress(i, total)`` after each case)."""
    out = []
    for i, case in enumerate(grid):
        out += case_rows(case, seed)
        if progress:
            progress(i + 1, len(grid))
    return out
