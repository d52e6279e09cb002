"""Error metrics and the tolerance policy.

Every backend output (forward or a gradient) is compared with the float64 reference run
on the *same rounded inputs* (the backend's dtype cast back to float64), so the only error
left is the backend's own arithmetic.  The bound, per output element, is

    |a - b|  <=  (u + u64) n sum|terms|  +  n m eta D+ C+                              (*)

Derivation (reference/README.md section 1 states it as the project's contract).  With
gradual underflow every floating-point operation satisfies ``fl(a op b) = (a op b)(1 + d) + e``
with ``|d| <= u`` and ``e = 0`` for ``+ -`` and ``|e| <= eta`` (half the smallest subnormal)
for ``* /`` and ``exp`` (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
section 2.1 and eq. 2.8).  Every output element is a sum of products: data factors (``x``,
the weights, ``dy``) times coefficients the layer builds (bilinear weights, Gaussians, their
derivatives, Hermite factors).

1. Relative part.  A sum of products evaluated in any order and any association has error
   at most ``gamma_n sum|terms| ~ n u sum|terms|`` (Higham section 3.1 and 4.2), ``n`` the
   number of summands plus the rounded operations in one product (``n_terms``).  ``sum|terms|``
   is the reference run in absolute mode (every term made non-negative: the same products,
   so it holds for every association of them).  Building a coefficient adds operations:
   normalising sums over ``2r+1`` taps, the Hermite recursion, products, and ``exp``, whose
   relative error is its argument's absolute error; that argument is the exponent relative
   to the unit's largest tap (``impls._math.gauss_axis``), so it never exceeds the underflow
   threshold ``L`` (``exp(-L) = eta``) for a tap that is not exactly 0 (``exp_arg``).  The
   reference's own rounding adds ``u64`` per operation: hence ``u + u64``.
2. Absolute part (underflow).  A term is a chain of ``m`` rounded multiplications, divisions
   and ``exp`` (``m = coef_depth + 4``: the coefficient's operations, the data factors and the
   rounding of the result itself).  The ``i``-th of them may commit an ``eta`` (its result falls
   below the smallest normal number), which the factors after it multiply: by at most the product
   of their magnitudes where those exceed 1, and by at most 1 where they do not (a factor below 1
   shrinks an error, it cannot be taken as a scale of it).  So one term errs by at most
   ``m eta D+ C+`` with ``D+`` the product of ``max(1, largest |a|)`` over the data arrays in that
   output's terms (``data_scale(clip=True)``) and ``C+ = max(1, C)``, ``C`` the largest magnitude of
   the coefficient chain (``coef_bound``: normalised Gaussians and bilinear weights are <= 1,
   derivatives in mu and sigma bring ``|t| / sigma^2`` and ``t^2 / sigma^3``, Hermite
   polynomials ``(2|z| + 2m)^m``), and ``n`` such terms are summed (sums and differences of
   subnormals are exact).  Clipping at 1 is what makes the floor hold whatever the data's scale:
   with inputs scaled by 1e-20 a float32 result of 0 against a reference of 2.3e-48 is the
   correctly rounded one, and an earlier floor ``n eta D C`` (which shrank with the data) judged
   it 2.8e4 times its bound.  This term is ~1e-45 n m D+ C+ in float32 and ~5e-324 n m D+ C+ in
   float64: it only matters where results underflow (Gaussian tails the reference keeps at 1e-51
   and float32 rounds to 0, tiny inputs) or where ``sum|terms|`` is exactly 0.

The ``bound_ratio`` reported is the largest ``|a - b| / bound`` (<= 1 passes).  Nothing in
this policy is a guessed constant: change the dtype and the bound follows.
"""

import math

import numpy as np

EPS = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
# eta = 2^ETA_EXP, half the smallest subnormal: the absolute error of a product, quotient or exp
# that underflows (as an exponent: float64's 2^-1075 is not itself a float64).
ETA_EXP = {"float64": -1075, "float32": -150, "float16": -25, "bfloat16": -134}
# Flush-to-zero (CUDA's -ftz=true, which CuPy adds to every NVRTC compile): a float32 result below
# the smallest normal 2^-126 becomes 0 and a subnormal operand is read as 0, so the absolute error
# of one operation is below 2^-126 instead of eta.  The same holds for a dense kernel whose taps
# below the smallest normal are set to 0 on the CPU (``impls._math.flush_subnormal``: no
# subnormal stalls; float32 only, float64 keeps its subnormals).  The floor then uses this exponent (a bound, not
# a fit: the relative part is unchanged, and an exp argument is never larger than without FTZ).
FTZ_EXP = {"float32": -126, "float16": -14, "bfloat16": -126}


def underflow_arg(dtype):
    """``L = -log(eta)``: ``exp(-a)`` is 0 in ``dtype`` for ``a > L`` (745.1 in float64, 104.0 in float32)."""
    return -ETA_EXP[dtype] * math.log(2.0)


def _sigma_min(case):
    """Smallest scale of any unit: ``sigma``, or ``0.7 sigma`` with per-unit scales (``Case.arrays``)."""
    return case.sigma * (0.7 if case.per_unit_sigma else 1.0)


def exp_arg(case, dtype="float64"):
    """Bound on ``|d arg| / u`` for the argument ``arg`` of the Gaussian's ``exp``: ``exp`` turns
    that absolute error of its argument into the relative error of the coefficient.

    ``dau``, ``njet`` (``impls._math.gauss1d``): ``arg = t^2 / (2 sigma^2)``, two roundings of
    a number at most ``A = min(L, r^2 / (2 sigma^2))`` (a larger one gives an exact 0).
    ``dau_gauss`` (``impls._math.gauss_axis``): ``arg = (d^2 + 2 d e) / (2 sigma^2)`` with
    ``d = t - c`` an integer, ``|d| <= 2R+1 = span``, ``e = c - mu``: error ``u (3 |arg| + |2de| /
    (2 sigma^2))``.  Inside the window ``|e| <= 1/2`` so ``|2de| <= span``; outside ``d`` and
    ``e`` have one sign so ``|2de| <= 2 sigma^2 |arg|``.  ``|arg| <= A = min(L, (span^2 + 2 span
    (far - R)^+) / (2 sigma^2))``, ``far`` the largest ``|mu|``.  -> ``4 A + span / (2 sigma^2)``.
    """
    if case.layer == "acu":
        return 0.0
    r = case.resolved_radius()
    sig = _sigma_min(case)
    big = underflow_arg(dtype)
    if case.layer == "dau_gauss":
        span = 2 * r + 1
        far = case.spread + abs(case.offset)
        a = min(big, (span**2 + 2 * span * max(0.0, far - r)) / (2 * sig**2))
        return 4 * a + span / (2 * sig**2)
    return 2 * min(big, r**2 / (2 * sig**2))


def coef_depth(case, dtype="float64"):
    """Operations spent building one coefficient (normalising sums over ``2r+1`` taps twice,
    Hermite polynomial, ``exp`` and its argument's conditioning, products): added to every term count.

    The Hermite count is the reference's, the largest: ``scipy.special.eval_hermite`` evaluates
    ``2^(m/2) He_m(sqrt(2) z)``, 3 roundings per step of its recurrence, ``m`` relative errors of
    the rounded argument ``sqrt(2) z`` in each degree-``m`` term (2 roundings: the constant and the
    product), and 2 for the power of two and the last product: ``5 m + 2``."""
    r = case.resolved_radius() if case.layer != "acu" else 0
    return 4 * (2 * r + 1) + (5 * case.order + 2) + 16 + math.ceil(exp_arg(case, dtype))


def coef_bound(case):
    """``C``: the largest magnitude of a coefficient or coefficient derivative the layer forms
    (bilinear weights and normalised Gaussians <= 1; ``|t| / sigma^2``, ``t^2 / sigma^3`` per axis
    for the mu and sigma derivatives; Hermite factors ``|H_m(z)| <= (2|z| + 2m)^m``, twice for a
    2-D basis filter).  Used only for the underflow floor."""
    if case.layer == "acu":
        return 2.0
    r = case.resolved_radius()
    sig = _sigma_min(case)
    if case.layer == "dau_gauss":
        r = 2 * r + 1 + case.spread + abs(case.offset)
    t = r + 1.0
    c = max(1.0, t / sig**2, 4 * t**2 / sig**3)
    if case.layer == "njet":
        m = case.order
        z = t / (sig * math.sqrt(2.0))
        c *= (2 * z + 2 * m + 2) ** (2 * m) * (1 + 2 * m / sig)
    return c


def data_scale(output, arrays, dy, clip=False):
    """``D``: product of the largest magnitudes of the data arrays in ``output``'s terms;
    ``clip``: each magnitude taken as at least 1 (``D+`` of the underflow floor)."""
    top = {k: float(np.max(np.abs(v), initial=0.0)) for k, v in arrays.items() if v is not None}
    top["dy"] = float(np.max(np.abs(dy), initial=0.0))
    if clip:
        top = {k: max(1.0, v) for k, v in top.items()}
    w = top.get("weight", top.get("alpha", 0.0))
    return {
        "forward": w * top["x"],
        "x": w * top["dy"],
        "weight": top["x"] * top["dy"],
        "alpha": top["x"] * top["dy"],
        "bias": top["dy"],
    }.get(output, w * top["x"] * top["dy"])


def floor(case, output, arrays, dy, dtype, ftz=False):
    """The absolute part of (*): ``n m eta D+ C+`` (module docstring, item 2); ``ftz``: the backend
    flushes subnormals in ``dtype`` (``FTZ_EXP`` replaces ``eta``)."""
    exp = FTZ_EXP[dtype] if ftz and dtype in FTZ_EXP else ETA_EXP[dtype]
    m = coef_depth(case, dtype) + 4
    scale = data_scale(output, arrays, dy, clip=True) * max(1.0, coef_bound(case))
    return math.ldexp(n_terms(case, output, dtype) * m * scale, exp)


def n_terms(case, output, dtype="float64"):
    """Upper bound on the number of terms summed into one element of ``output``
    (``"forward"`` or an argument name) for ``case``, over any evaluation order, plus the
    operations in one term (``coef_depth``)."""
    n, k_ = case.n, case.k
    # with channel groups an output reads S/G channels and an input feeds F/G outputs (ACU has none)
    s_, f_ = case.s // case.channel_groups, case.f // case.channel_groups
    ho, wo = case.out_shape()[2:]
    pix = max(n * ho * wo, 1)
    if case.layer == "dau":
        tap = 4 * (2 * case.resolved_radius() + 1) ** 2  # bilinear x blur taps per unit
        per = {"forward": s_ * k_ * tap, "x": f_ * k_ * tap, "weight": pix * tap}
        per["mu_x"] = per["mu_y"] = 2 * pix * tap
        per["sigma"] = 2 * case.f * s_ * k_ * pix * tap  # every output channel's pairs
    elif case.layer == "dau_gauss":
        tap = (2 * case.resolved_radius() + 1) ** 2
        per = {"forward": s_ * k_ * tap, "x": f_ * k_ * tap, "weight": pix * tap}
        per["mu_x"] = per["mu_y"] = 2 * pix * tap
        per["sigma"] = 2 * pix * tap * (1 if case.per_unit_sigma else case.f * s_ * k_)
    elif case.layer == "acu":
        groups = max(case.groups, 1)
        per = {"forward": s_ * k_ * 4, "x": f_ * k_ * 4, "weight": pix * 4}
        per["pos_x"] = per["pos_y"] = 8 * pix * s_ * f_ // groups
    else:  # njet
        tap = (2 * case.resolved_radius() + 1) ** 2
        j_ = (case.order + 1) * (case.order + 2) // 2
        per = {"forward": s_ * j_ * tap, "x": f_ * j_ * tap, "alpha": pix * tap}
        per["sigma"] = 2 * case.f * s_ * j_ * pix * tap
    per["bias"] = pix
    return per[output] + 1 + coef_depth(case, dtype)


def compare(a, b, mag, eps, nterms, floor=0.0):
    """Compare a backend result ``a`` with the reference ``b``; ``mag`` is ``sum|terms|`` of ``b``,
    ``floor`` the absolute part of the bound (``floor()``).

    -> dict: ``rel_err`` (``||a-b|| / ||b||``), ``max_abs_err``, ``bound_ratio``
    (``max |a-b| / ((eps + eps64) n mag + floor)``), ``degenerate`` (a constant or all-zero ``a``
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
    bound = (eps + EPS["float64"]) * nterms * np.abs(mag) + floor
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / bound)
    worst = float(np.max(ratio, initial=0.0))
    # A constant result where the reference varies by more than the bound allows (variation at
    # the rounding level, e.g. a gradient that is 0 in exact arithmetic, is not degenerate).
    degenerate = b.size > 1 and np.ptp(a) == 0 and np.ptp(b) > 2 * float(np.max(bound, initial=0.0))
    return {
        "rel_err": rel,
        "max_abs_err": float(diff.max(initial=0.0)),
        "bound_ratio": worst,
        "degenerate": bool(degenerate),
        "ok": bool(worst <= 1.0 and not degenerate),
        "note": "constant output where the reference varies" if degenerate else "",
    }


# ---------------------------------------------------------------- peers: coordinate-first sampling
#
# Our backends form a bilinear weight from the displacement and its floor (reference/README.md
# section 1); a peer (DCLS, deform_conv2d) forms the coordinate first, ``c = fl(mu + h)`` with ``h``
# the window's half-width (DCLS) or ``c = fl(i s - pad + tap + offset)`` (deform_conv2d), then its
# weights from ``c``.  That rounding moves the sample point by ``delta <= u |c|`` (one more ``u`` for
# the difference ``tap - c`` of magnitude < 1 where a weight is non-zero), the same shift for every
# tap of a unit, so the peer computes our layer at a position off by at most ``delta``.  A
# coefficient ``a(mu)`` of a term then errs by ``delta |da/dmu|`` per axis: an absolute error, which
# no relative bound covers (a bilinear weight of 1e-6 gets ``u |c|`` added).  Summed over the ``n``
# terms of an output element with data products of magnitude at most ``D``:
#
#     |a - b|  +=  2 delta C1 n D                                                          (**)
#
# ``C1``: the largest derivative of a coefficient along one axis (two axes: the 2).  Bilinear
# weights ``(1 - |X|)`` and their position derivatives ``+-(1 - |X'|)``: ``C1 = 1``.  A Gaussian
# coefficient (DCLS gauss) is different: ``G`` normalised over the window changes by the factor
# ``exp(+-2 |d| delta / sigma^2)`` per axis (``|d| <= 2R`` inside the window, the normalising sum
# moving the other way), a relative error ``4 (2R) delta / sigma^2`` for both axes, counted as
# operations added to ``n`` (``coordinate_ops``); only the factors the gradients add are absolute:
# ``d / sigma^2`` in the position gradients (``C1 = 2 / sigma^2``, the normalisation's mean moving
# too) and ``d^2 / sigma^3`` in the sigma gradient (``C1 = 2 (2 (2R) / sigma^3)``).  DCLS gauss also
# rounds its exponent in other ways than ours (``|SIG| + 0.27`` back to sigma, a division, a 2-norm
# then its square: 12 roundings of an argument up to ``(2R)^2 / sigma^2``) and sums its ``side^2``
# window: relative errors, added to ``n`` as well.


def _positions(arrays):
    pos = [arrays[k] for k in ("mu_x", "mu_y", "pos_x", "pos_y") if arrays.get(k) is not None]
    return max((float(np.max(np.abs(p), initial=0.0)) for p in pos), default=0.0)


def coordinate_delta(case, arrays, dtype):
    """``delta``: the largest shift of a sample point by a peer's rounded coordinate (above)."""
    m = _positions(arrays)
    if case.layer == "dau":  # DCLS v1: c = mu + ceil(max |mu|)
        mag = m + math.ceil(m)
    elif case.layer == "dau_gauss":  # DCLS gauss: c = mu + radius
        mag = m + case.resolved_radius()
    else:  # deform_conv2d: offset pos + K//2 - tap (|.| <= m + K), then i s - pad + tap + offset
        mag = 2 * (m + case.k) + max(case.h, case.w) + case.stride
    return EPS[dtype] * (mag + 1) * (1 + EPS[dtype])


def coordinate_ops(case, arrays, dtype):
    """Relative roundings a peer adds to a coefficient beyond ours, counted as operations (above):
    4 for the bilinear peers (the normalising sum of v1, the weight differences); for DCLS gauss the
    exponent's 12 roundings, its ``side^2`` sum and the coordinate shift's relative effect."""
    if case.layer != "dau_gauss":
        return 4
    r = case.resolved_radius()
    sig = _sigma_min(case)
    arg = min(underflow_arg(dtype), (2 * r) ** 2 / sig**2)
    shift = 4 * (2 * r) * coordinate_delta(case, arrays, dtype) / EPS[dtype] / sig**2
    return math.ceil(12 * arg + (2 * r + 1) ** 2 + shift)


def coordinate_floor(case, output, arrays, dy, dtype):
    """(**) above: ``2 delta C1 n D`` with ``D`` the data scale of ``output`` (not clipped); 0 where the
    shift is a relative error (DCLS gauss's forward, input and weight gradients: ``coordinate_ops``)."""
    c1 = 1.0
    if case.layer == "dau_gauss":
        sig = _sigma_min(case)
        c1 = {"mu_x": 2 / sig**2, "mu_y": 2 / sig**2, "sigma": 4 * (2 * case.resolved_radius()) / sig**3}.get(output)
        if c1 is None:
            return 0.0
    d = data_scale(output, arrays, dy)
    return 2 * coordinate_delta(case, arrays, dtype) * c1 * n_terms(case, output, dtype) * d
