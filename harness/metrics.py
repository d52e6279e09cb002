"""Error metrics and the tolerance policy.

Every backend output (forward or a gradient) is compared with the float64 reference run
on the *same rounded inputs* (the backend's dtype cast back to float64), so the only error
left is the backend's own arithmetic.  For a sum of ``n`` terms evaluated in any order in
precision ``u`` the error is at most ``n u sum|terms|`` (Higham, Accuracy and Stability of
Numerical Algorithms, section 4.2).  ``sum|terms|`` per element is the reference run in
absolute mode (``reference`` with ``absolute=True``: every term made non-negative); ``n`` is
``n_terms`` below.  An element passes when ``|a - b| <= (u + u64) n sum|terms|``; the
``bound_ratio`` reported is the largest ``|a - b| / bound`` (<= 1 passes).  Nothing in this
policy is a guessed constant: change the dtype and the bound follows.
"""

import math

import numpy as np

EPS = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def exp_arg(case):
    """Largest ``|argument|`` of the Gaussian's ``exp``: ``exp`` turns an absolute error
    ``u |arg|`` of its argument into that relative error of the coefficient."""
    if case.layer == "acu":
        return 0.0
    r = case.resolved_radius()
    if case.layer == "dau_gauss":
        sig = case.sigma * (0.7 if case.per_unit_sigma else 1.0)
        far = case.spread + abs(case.offset) + r + 1
        return 2 * far**2 / (2 * sig**2)
    return r**2 / case.sigma**2


def coef_depth(case):
    """Operations spent building one coefficient (normalising sums over ``2r+1`` taps twice,
    Hermite recursion, ``exp`` and its argument's conditioning, products): added to every term count."""
    r = case.resolved_radius() if case.layer != "acu" else 0
    return 4 * (2 * r + 1) + 4 * case.order + 16 + math.ceil(exp_arg(case))


def n_terms(case, output):
    """Upper bound on the number of terms summed into one element of ``output``
    (``"forward"`` or an argument name) for ``case``, over any evaluation order."""
    n, s_, f_, k_ = case.n, case.s, case.f, case.k
    ho, wo = case.out_shape()[2:]
    pix = max(n * ho * wo, 1)
    if case.layer == "dau":
        tap = 4 * (2 * case.resolved_radius() + 1) ** 2  # bilinear x blur taps per unit
        per = {"forward": s_ * k_ * tap, "x": f_ * k_ * tap, "weight": pix * tap}
        per["mu_x"] = per["mu_y"] = 2 * pix * tap
        per["sigma"] = 2 * f_ * s_ * k_ * pix * tap
    elif case.layer == "dau_gauss":
        tap = (2 * case.resolved_radius() + 1) ** 2
        per = {"forward": s_ * k_ * tap, "x": f_ * k_ * tap, "weight": pix * tap}
        per["mu_x"] = per["mu_y"] = 2 * pix * tap
        per["sigma"] = 2 * pix * tap * (1 if case.per_unit_sigma else f_ * s_ * k_)
    elif case.layer == "acu":
        groups = max(case.groups, 1)
        per = {"forward": s_ * k_ * 4, "x": f_ * k_ * 4, "weight": pix * 4}
        per["pos_x"] = per["pos_y"] = 8 * pix * s_ * f_ // groups
    else:  # njet
        tap = (2 * case.resolved_radius() + 1) ** 2
        j_ = (case.order + 1) * (case.order + 2) // 2
        per = {"forward": s_ * j_ * tap, "x": f_ * j_ * tap, "alpha": pix * tap, "sigma": 2 * f_ * s_ * j_ * pix * tap}
    per["bias"] = pix
    return per[output] + 1 + coef_depth(case)


def compare(a, b, mag, eps, nterms):
    """Compare a backend result ``a`` with the reference ``b``; ``mag`` is ``sum|terms|`` of ``b``.

    -> dict: ``rel_err`` (``||a-b|| / ||b||``), ``max_abs_err``, ``bound_ratio``
    (``max |a-b| / ((eps + eps64) n mag)``), ``degenerate`` (a constant or all-zero ``a``
    where ``b`` varies), ``ok``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return {
            "rel_err": math.inf,
            "max_abs_err": math.inf,
            "bound_ratio": math.inf,
            "degenerate": False,
            "ok": False,
            "note": f"shape {a.shape} != reference {b.shape}",
        }
    diff = np.atleast_1d(np.abs(a - b))
    diff[np.isnan(a) & np.isnan(b)] = 0.0
    diff[np.isnan(diff)] = np.inf
    nb = np.linalg.norm(b)
    if nb > 0:
        rel = float(np.linalg.norm(diff) / nb)
    else:
        rel = 0.0 if diff.max(initial=0.0) == 0 else math.inf
    bound = (eps + EPS["float64"]) * nterms * np.abs(mag)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / bound)
    worst = float(np.max(ratio, initial=0.0))
    degenerate = b.size > 1 and np.ptp(b) > 0 and np.ptp(a) == 0
    return {
        "rel_err": rel,
        "max_abs_err": float(diff.max(initial=0.0)),
        "bound_ratio": worst,
        "degenerate": bool(degenerate),
        "ok": bool(worst <= 1.0 and not degenerate),
        "note": "constant output where the reference varies" if degenerate else "",
    }
