"""Cost models of reference/README.md section 8: multiply-accumulates (MACs) and minimal memory traffic
per layer, algorithm and pass; the paper's and the model's theoretical speed-up.

``P = N Ho Wo`` output positions; ``S`` below, where it multiplies ``F``, is ``S/G``: with ``G`` channel
groups (``groups``) each output channel reads ``S/G`` input channels (a depthwise layer ``1``), in every
algorithm and in ``conv2d-std``, which is timed with the same groups.  "naive" is the materialised kernel
of side ``kh x kw`` (what ``torch-naive`` builds in that run); "efficient" is each paper's algorithm as the
efficient backends implement it (blur then shift for DAU, shift then 1x1 products for ACU,
separable basis then mixing for N-Jet).  Backward counts are the passes those backends perform:

- dau: one pass of the four corner sums against ``dy`` serves the weight and the exact
  displacement gradients (``4PFSK``); one gather of ``dy`` at the rotated displacements gives
  dL/d(blurred input) for the input and sigma gradients (``4PFSK``); blurs: the adjoint blur and
  two for ``dG/dsigma`` (the forward's blurred input is kept).  Eq. 16 (``mu_grad="gauss"``) adds
  two corner-sum passes on ``x * Dx`` and ``x * Dy`` (``8PFSK``) and their two blurs.
- acu: 1x1 products for dL/d(shifted maps) and the weight (``2PFSK``), and three bilinear passes
  (re-shift for the weight gradient, the shift's adjoint for the input, the position corner sums:
  ``12PSKG``).
- njet: mixing for input and alpha (``2PFSJ``) and three separable basis passes (the basis
  recomputed for alpha, the input gradient's adjoint, the sigma chain through the 1-D taps).
"""

import math

import torch

from ..impls import _math

PASSES = ("forward", "backward", "forward+backward")


def _dims(case):
    n, f_, ho, wo = case.out_shape()
    return n, case.s, f_, case.h, case.w, ho, wo, n * ho * wo


def _pairs(case):
    """Channel pairs ``F S/G`` that carry weights (``G`` channel groups; ACU has none)."""
    return case.f * (case.s // case.channel_groups)


def naive_kernel(case, arrays):
    """Side ``(kh, kw)`` of the dense kernel ``torch-naive`` materialises for these parameters."""
    if case.layer in ("dau_gauss", "njet"):  # cropped to the offsets that reach the image
        reach = case.resolved_radius()
    elif case.layer == "dau":
        fy, fx = (torch.floor(torch.from_numpy(arrays[k])) for k in ("mu_y", "mu_x"))
        reach = case.resolved_radius() + max(_math.reach(fy), _math.reach(fx))
    else:
        fy, fx = (torch.floor(torch.from_numpy(arrays[k])) for k in ("pos_y", "pos_x"))
        reach = max(_math.reach(fy), _math.reach(fx))
    n, s_, f_, h, w, ho, wo, _ = _dims(case)
    rows, cols = _math.window(h, w, case.stride, ho, wo, reach)
    return rows[1] - rows[0] + 1, cols[1] - cols[0] + 1


def naive_macs(case, kernel, pass_):
    """``P F S kh kw`` forward; backward twice that plus the chain ``F S K kh kw``."""
    p, fs = _dims(case)[-1], _pairs(case)
    fwd = p * fs * kernel[0] * kernel[1]
    units = {"dau": case.k, "dau_gauss": case.k, "acu": case.k, "njet": _math.n_basis(case.order)}[case.layer]
    bwd = 2 * fwd + fs * units * kernel[0] * kernel[1]
    return {"forward": fwd, "backward": bwd, "forward+backward": fwd + bwd}[pass_]


def efficient_macs(case, pass_):
    """MACs of the efficient algorithm (module docstring) for ``pass_``."""
    n, s_, f_, h, w, ho, wo, p = _dims(case)
    if case.layer == "dau":
        rb = case.resolved_radius()
        blur = n * h * w * s_ * 2 * (2 * rb + 1)
        shift = 4 * p * _pairs(case) * case.k
        fwd = shift + blur
        gauss = 2 if case.mu_grad == "gauss" else 0
        bwd = (2 + gauss) * shift + (3 + gauss) * blur
    elif case.layer == "acu":
        g = max(case.groups, 1)
        interp = 4 * p * s_ * case.k * g
        prod = p * f_ * s_ * case.k
        fwd = interp + prod
        bwd = 2 * prod + 3 * interp
    elif case.layer == "njet":
        r, j_ = case.resolved_radius(), _math.n_basis(case.order)
        sep = n * h * wo * s_ * (case.order + 1) * (2 * r + 1) + p * s_ * j_ * (2 * r + 1)
        mix = p * _pairs(case) * j_
        fwd = sep + mix
        bwd = 2 * mix + 3 * sep
    else:  # dau_gauss has no efficient form: per-unit scales make the kernel non-separable
        side = 2 * case.resolved_radius() + 1
        return naive_macs(case, (side, side), pass_)
    return {"forward": fwd, "backward": bwd, "forward+backward": fwd + bwd}[pass_]


def paper_gamma(kn, k):
    """DAU IJCV Eq. 17: ``gamma = Kn^2 / (4 K)`` for a standard ``Kn x Kn`` kernel and ``K`` units."""
    return kn * kn / (4.0 * k)


def standard_side(case, arrays):
    """Side of the standard kernel covering the units' reach: ``2 ceil(max |mu|) + 1`` (dau, acu)."""
    names = ("mu_x", "mu_y") if case.layer == "dau" else ("pos_x", "pos_y")
    reach = max(float(abs(arrays[k]).max()) for k in names)
    return 2 * math.ceil(reach) + 1


def min_bytes(case, pass_, itemsize):
    """Compulsory memory traffic: read inputs and parameters, write outputs (and the reverse for backward)."""
    n, s_, f_, h, w, ho, wo, p = _dims(case)
    units = {"dau": 3 * case.k, "dau_gauss": 3 * case.k, "acu": case.k, "njet": _math.n_basis(case.order)}[case.layer]
    x, y, params = n * s_ * h * w, p * f_, _pairs(case) * units
    fwd = x + params + y
    bwd = y + x + params + x + params  # dy, x, params in; dx, dparams out
    return itemsize * {"forward": fwd, "backward": bwd, "forward+backward": fwd + bwd}[pass_]


def std_macs(case, side, pass_):
    """MACs of ``conv2d-std`` (a dense ``side x side`` conv2d with the layer's channel groups): ``P F S/G side^2``
    forward, twice that backward (input and kernel gradients)."""
    fwd = _dims(case)[-1] * _pairs(case) * side * side
    return {"forward": fwd, "backward": 2 * fwd, "forward+backward": 3 * fwd}[pass_]


def inside(side, h, w, stride=1):
    """Fraction of the (output pixel, tap) pairs of a ``side x side`` conv2d with padding ``side // 2``
    that read inside the ``h x w`` image.  A library may skip the zero padding's taps (oneDNN does:
    measured at the DAU paper shape, its 9 x 9 conv ran at 1.15x the MAC/s of the same conv without
    padding when every tap is counted, and 0.87 of the taps are inside), so a roofline counts these."""

    def axis(n):
        pad, out = side // 2, (n + 2 * (side // 2) - side) // stride + 1
        if out <= 0:
            return 1.0
        hits = sum(min(side, n + pad - o * stride) - max(0, pad - o * stride) for o in range(out))
        return hits / (out * side)

    return axis(h) * axis(w)


def _ratio(a, b):
    """``a / b``, None when ``b`` is 0 (a case with no work, e.g. batch 0)."""
    return a / b if b else None


def model(case, arrays, pass_):
    """Everything the speed table needs about ``case`` and ``pass_`` -> dict.  Ratios of a case with
    no work (``N = 0``: no MACs on either side) are None."""
    kernel = naive_kernel(case, arrays)
    naive = naive_macs(case, kernel, pass_)
    eff = efficient_macs(case, pass_)
    out = {
        "kernel_naive": list(kernel),
        "macs_naive": naive,
        "macs_efficient": eff,
        "model_gamma": _ratio(naive, eff),
        "paper_gamma": None,
        "standard_side": None,
        "macs_std": None,
        "std_gamma": None,
    }
    if case.layer in ("dau", "acu"):
        side = standard_side(case, arrays)
        out.update(standard_side=side, paper_gamma=paper_gamma(side, case.k))
    if case.layer == "dau":
        out["macs_std"] = std_macs(case, out["standard_side"], pass_)
        out["std_gamma"] = _ratio(out["macs_std"], eff)
    return out
