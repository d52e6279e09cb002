"""The layers' mathematics in torch ops, written once and shared by every backend.

Everything here is differentiable through torch autograd and works on any device and
floating dtype.  Shapes follow reference/README.md: ``[F,S,K]`` per-unit parameters, kernels
``[F,S,kh,kw]`` in correlation orientation (tap ``(t, u)`` reads ``x[i*s + t, j*s + u]``).
"""

import math

import torch


def out_size(n, stride):
    """``ceil(n / stride)`` (reference/README.md section 1)."""
    return -(-n // stride)


def taps(r, like):
    """Integer offsets ``-r..r`` in ``like``'s dtype and device. -> ``[2r+1]``"""
    return torch.arange(-r, r + 1, dtype=like.dtype, device=like.device)


def sigma_floor(dtype):
    """Smallest scale the Gaussians are evaluated at: ``tiny ** (1/4)`` of ``dtype`` (its smallest
    normal number to the quarter power; 3.3e-10 in float32, 1.2e-77 in float64).

    Below it every Gaussian here is already the delta kernel (the nearest tap 1, the others
    ``exp(-q / (2 sigma^2))`` with ``q >= 1e-7`` far below the underflow threshold), so
    clamping ``sigma`` to it changes no value, and it keeps ``sigma^2``, ``sigma^3`` and
    ``sigma^4`` normal so that no gradient formula divides by an underflowed power
    (reference/README.md section 1, the small-sigma limit).
    """
    return torch.finfo(dtype).tiny ** 0.25


def underflow_arg(dtype):
    """``L`` with ``exp(-a) == 0`` in ``dtype`` for every ``a > L``: ``-log`` of half the smallest subnormal."""
    fi = torch.finfo(dtype)
    return math.log(2.0) - math.log(fi.smallest_normal) - math.log(fi.eps)


def gauss_exp(q, sigma):
    """``exp(-q / (2 sigma^2))`` for squared distances ``q >= 0`` (may be ``inf``), without 0/0.

    Terms whose value underflows to 0 are set to exactly 0 with no arithmetic on them, so
    their (zero) gradient is not ``0 * inf``; ``sigma`` is clamped to ``sigma_floor``.
    ``q [...]``, ``sigma`` broadcastable -> ``[...]``.
    """
    s = sigma.clamp(min=sigma_floor(sigma.dtype))
    two_s2 = 2 * s * s
    keep = (q.detach() <= underflow_arg(q.dtype) * two_s2.detach()) | (q.detach() == 0)
    safe = torch.where(keep, q, torch.zeros_like(q))
    return torch.where(keep, torch.exp(-safe / two_s2), torch.zeros_like(safe))


def _keep(v, r, keep):
    """The centre taps ``|t| <= keep`` of ``v [..., 2r+1]`` (all of them for ``keep=None``)."""
    return v if keep is None or keep >= r else v[..., r - keep : r + keep + 1]


def gauss1d(sigma, r, keep=None):
    """Discretely normalised Gaussian ``g(t)``, ``|t| <= r`` (DAU IJCV Eq. 3-4). -> ``[2r+1]``

    At a ``sigma`` too small for ``sigma^2`` to be represented it is the delta kernel (the limit).
    ``keep``: return only the taps ``|t| <= keep`` (normalised over all ``2r+1``; ``blur_reach``).
    """
    e = gauss_exp(taps(r, sigma) ** 2, sigma)
    return _keep(e / e.sum(), r, keep)


def gauss1d_dsigma(sigma, r, keep=None):
    """``d g / d sigma`` with ``r`` fixed (quotient rule), for hand-written backwards. -> ``[2r+1]``"""
    t = taps(r, sigma)
    s = sigma.clamp(min=sigma_floor(sigma.dtype))
    e = gauss_exp(t**2, sigma)
    de = e * (t**2 / s**3)
    z = e.sum()
    return _keep(de / z - e * de.sum() / z**2, r, keep)


def gauss_dx1d(sigma, r, keep=None):
    """``(u / sigma^2) g(u)``: the 1-D factor of DAU IJCV Eq. 16's ``Dx`` and ``Dy``. -> ``[2r+1]``"""
    s = sigma.clamp(min=sigma_floor(sigma.dtype))
    return _keep(taps(r, sigma) / (s * s) * gauss1d(sigma, r), r, keep)


def blur_reach(fl_y, fl_x, stride, hw, rb):
    """Radius ``rg <= rb`` of the part of a radius-``rb`` blur that the samples of ``dau`` use.

    ``fl_y, fl_x`` int64 floors of the displacements, ``hw = (H, W)``.  Samples read canvas
    points ``i s + floor + {0, 1}``; those that can be non-zero lie within ``e`` of the image
    (``e`` how far the sampled range passes the image on any side, at most ``rb``), and a
    canvas point within ``e`` of the image reads pixels at most ``e + max(H, W) - 1`` away.
    So a blur with the centre ``2 rg + 1`` taps of the normalised ``G`` (``gauss1d(.., keep=rg)``),
    ``rg = min(rb, e + max(H, W) - 1)``, on a canvas of ``rg`` border gives the exact canvas at
    every sample, and its adjoint the exact ``x`` and ``sigma`` gradients (taps beyond ``rg``
    join no sample to a pixel).  Sized by the image, not by sigma.
    """
    e = 0
    for fl, size in ((fl_y, hw[0]), (fl_x, hw[1])):
        if fl.numel():
            n_out = out_size(size, stride)
            e = max(e, -int(fl.min()), (n_out - 1) * stride + int(fl.max()) + 1 - (size - 1))
    return min(rb, e + max(hw) - 1)


def gauss_derivs1d(sigma, r, order, keep=None):
    """Scale-normalised Gaussian derivatives ``d_m(t)``, ``m = 0..order`` (reference/README.md section 5).

    ``d_m = sigma^m (-1/(sigma sqrt2))^m H_m(t / (sigma sqrt2)) g(t)`` -> ``[order+1, 2r+1]``.
    Where ``g(t)`` underflows to 0 the Hermite factor is not evaluated (it may overflow):
    ``d_m(t) = 0`` there, the limit.  ``keep``: only the taps ``|t| <= keep`` (``g`` still
    normalised over all ``2r+1``; ``centred_reach``).
    """
    t = taps(r, sigma)
    g = gauss1d(sigma, r)
    s = sigma.clamp(min=sigma_floor(sigma.dtype))
    z = torch.where(g.detach() > 0, t, torch.zeros_like(t)) / (s * math.sqrt(2.0))
    h = [torch.ones_like(z), 2 * z]
    for m in range(2, order + 1):
        h.append(2 * z * h[m - 1] - 2 * (m - 1) * h[m - 2])
    return _keep(torch.stack([(-1 / math.sqrt(2.0)) ** m * h[m] * g for m in range(order + 1)]), r, keep)


def njet_pairs(order):
    """Basis index ``j`` -> ``(a, b)``: ``a``-th derivative along x, ``b``-th along y.

    Order of reference/README.md section 5."""
    return [(n - b, b) for n in range(order + 1) for b in range(n + 1)]


def n_basis(order):
    """``J = (order+1)(order+2)/2``."""
    return (order + 1) * (order + 2) // 2


def njet_basis(sigma, r, order):
    """``B_j(t, u) = d_b(t) d_a(u)`` -> ``[J, 2r+1, 2r+1]``."""
    d = gauss_derivs1d(sigma, r, order)
    return torch.stack([torch.outer(d[b], d[a]) for a, b in njet_pairs(order)])


def bilinear(mu):
    """Floors and 1-D bilinear weights of displacements ``mu [...]`` (reference/README.md section 1).

    -> ``(floor`` int64 ``[...]``, ``w [..., 2])`` with ``w[..., 0] = (floor + 1) - mu`` (the
    near tap) and ``w[..., 1] = mu - floor`` (the far tap).  Each is one subtraction, so it is
    the correctly rounded weight, and exact whenever it is below 1/2 (Sterbenz's lemma); the
    old ``1 - (mu - floor)`` rounds twice and cancels just below an integer: at ``mu = -1e-7``
    in float32 it gave 1.19e-7 instead of 1e-7.  Differentiable in ``mu``
    with the floor held fixed (``dw0/dmu = -1``, ``dw1/dmu = 1``).  The floor is clamped to
    ``+-2^40`` (such a stencil lies outside every image, and offsets stay far from int64
    overflow; the weights are computed from the unclamped floor).
    """
    fl = torch.floor(mu.detach())
    w = torch.stack(((fl + 1) - mu, mu - fl), -1)
    return _clamped(fl), w


def floors(mu):
    """The floors of ``bilinear`` alone (no weights): int64 ``[...]``."""
    return _clamped(torch.floor(mu.detach()))


FLOOR_MAX = 2.0**40  # floors are clamped to +-this: such a stencil lies outside every image


def _clamped(fl):
    return fl.clamp(-FLOOR_MAX, FLOOR_MAX).to(torch.int64)


def corner_weights(wy, wx):
    """Stencil weights ``wy(da) wx(db)`` from 1-D weights ``[..., 2]`` -> ``[..., 2, 2]``."""
    return wy[..., :, None] * wx[..., None, :]


def pos_grads(t, wy, wx):
    """Bilinear position derivatives from corner sums ``t[..., da, db]`` (floor held fixed,
    reference/README.md section 1) and 1-D weights ``[..., 2]`` -> ``(d/dx, d/dy)`` of shape ``[...]``."""
    gx = ((t[..., :, 1] - t[..., :, 0]) * wy).sum(-1)
    gy = ((t[..., 1, :] - t[..., 0, :]) * wx).sum(-1)
    return gx, gy


def reach(fl):
    """Largest ``|floor|`` or ``|floor + 1|`` over all units: the bilinear stencil's radius."""
    if fl.numel() == 0:
        return 0
    return int(torch.maximum(fl.abs(), (fl + 1).abs()).max())


def stencil_axis(fl, w, base, lo, hi):
    """One axis of units' stencils: ``out[..., t] = sum_da w[..., da] base[t - fl - da]`` for
    offsets ``t = lo..hi`` (``base`` centred, zero outside its ``2 rb + 1`` taps).

    ``fl`` int64 ``[...]``, ``w [..., 2]``, ``base [2rb+1]`` -> ``[..., hi-lo+1]``.  A gather, so
    its size is set by the window ``lo..hi``, never by ``rb``.
    """
    n = base.shape[0]
    t = torch.arange(lo, hi + 1, device=fl.device)
    out = 0
    for da in (0, 1):
        i = t - (fl[..., None] + da) + n // 2
        ok = (i >= 0) & (i < n)
        v = torch.where(ok, base[i.clamp(0, n - 1)], torch.zeros((), dtype=base.dtype, device=base.device))
        out = out + w[..., da, None] * v
    return out


def stencil_kernel(coef, fy, fx, wy, wx, base_r, base_c, rows, cols):
    """Dense correlation kernel ``sum_k coef[f,s,k] * (outer(base_r, base_c) composed with unit k's
    bilinear stencil)``, kept only at offsets ``t in rows = (t0, t1)``, ``u in cols`` (inclusive:
    the others fall outside every image the kernel is applied to).

    ``coef [F,S,K]``, ``fy, fx`` int64 ``[F,S,K]`` (floors), ``wy, wx [F,S,K,2]`` (``bilinear``'s
    weights), ``base_r, base_c`` 1-D of odd length, centred.
    -> ``[F, S, t1-t0+1, u1-u0+1]``, differentiable in ``coef``, ``wy``, ``wx`` and the bases.
    Both factors of the stencil are separable, so the kernel is ``sum_k coef ry_k (x) rx_k``;
    memory ``F S K (kh + kw) + F S kh kw`` whatever the bases' radius.
    """
    ry = stencil_axis(fy, wy, base_r, *rows)
    rx = stencil_axis(fx, wx, base_c, *cols)
    return torch.einsum("fsk,fskt,fsku->fstu", coef, ry, rx)


def gauss_axis(mu, sigma, r):
    """Discretely normalised 1-D Gaussians centred at ``mu [...]`` on taps ``-r..r`` -> ``[..., 2r+1]``.

    ``exp(-(t - mu)^2 / (2 sigma^2))`` normalised over the taps, computed relative to the
    nearest tap ``c = clamp(round(mu), -r, r)``: with ``d = t - c`` (an exact integer) and
    ``e = c - mu``, ``(t - mu)^2 - (c - mu)^2 = d^2 + 2 d e``, which is 0 at ``c`` and needs
    no ``mu^2``; so a unit far outside its window is exactly the one-hot edge tap (not 0/0,
    and no cancellation of ``mu^2`` in the ``mu`` and ``sigma`` gradients), and the constant
    dropped from the exponent cancels in the normalisation.  ``sigma`` broadcastable to ``mu``.
    """
    t = taps(r, mu)
    c = torch.round(mu.detach()).clamp(-r, r)[..., None]
    d = t - c
    e = c - mu[..., None]
    q = d * d + 2 * d * e
    ex = gauss_exp(q, sigma[..., None])
    return ex / ex.sum(-1, keepdim=True)


def unit_gaussians(mu_x, mu_y, sigma, radius, rows=None, cols=None):
    """Normalised unit Gaussians of ``dau_gauss`` (reference/README.md section 3) -> ``[F,S,K,kh,kw]``.

    The Gaussian is separable and the window square, so the 2-D normalisation is the product
    of the per-axis ones: ``Gk(t, u) = gy(t) gx(u)``.  Evaluating the 2-D exponent instead
    loses the y-profile of a unit far outside the window in x (its ``(u - mu_x)^2`` swamps
    ``(t - mu_y)^2``).  ``rows = (t0, t1)``, ``cols`` (inclusive offsets within ``-R..R``) keep
    only that part of the kernel (default: all of it, ``kh = kw = 2R+1``); the normalisation is
    over all ``2R+1`` taps either way.
    """
    rows = rows or (-radius, radius)
    cols = cols or (-radius, radius)
    gx = gauss_axis(mu_x, sigma, radius)[..., cols[0] + radius : cols[1] + radius + 1]
    gy = gauss_axis(mu_y, sigma, radius)[..., rows[0] + radius : rows[1] + radius + 1]
    return gy[..., :, None] * gx[..., None, :]


def flush_subnormal(k):
    """``k`` with the entries below the smallest normal number set to 0, in float32 on the CPU.

    The far taps of a float32 Gaussian kernel are subnormal (0.4% of the dense kernel of the
    ``dau_gauss`` paper case), and on x86 one subnormal operand makes a multiplication take
    orders of magnitude longer (torch-naive's paper-case forward: 886 ms, 126 ms with them
    flushed).  A flushed tap changes a term by less than ``2^-126 |x|`` in float32, within the
    floor of reference/README.md section 9 for a backend that flushes (the registry's
    ``ftz_cpu``).  On CUDA subnormals cost nothing extra, and float64 taps reach its subnormals
    only beyond ``exp(-708)``: both left as they are.  The gradient passes
    unchanged to every tap, flushed or not (``k + (flushed - k).detach()``: the values are the
    flushed ones exactly, ``k - k = 0``), so a tap that is 0 or tiny still carries the gradient of
    what it is built from (a zero weight's)."""
    if k.device.type != "cpu" or k.dtype != torch.float32 or k.numel() == 0:
        return k
    flushed = torch.where(k.abs() < torch.finfo(k.dtype).tiny, torch.zeros((), dtype=k.dtype), k)
    return k + (flushed - k).detach()


def centred_reach(hw, stride, r):
    """Largest offset ``<= r`` at which a centred kernel can read a pixel for some output:
    ``min(r, max(H - 1, (Ho - 1) s, W - 1, (Wo - 1) s))``.  Cropping a centred ``(2r+1)^2``
    kernel to this radius changes no output or gradient (the cut taps read only the zero
    extension), and keeps backends whose kernels assume a centred square kernel unchanged."""
    h, w = hw
    return min(r, max(h - 1, (out_size(h, stride) - 1) * stride, w - 1, (out_size(w, stride) - 1) * stride))


def window(h, w, stride, ho, wo, reach_r):
    """Offsets a kernel of radius ``reach_r`` needs: taps outside ``[-(Ho-1)s, H-1]`` read no pixel of any output.

    -> ``(rows, cols)`` inclusive offset ranges.
    """
    rows = (max(-reach_r, -(ho - 1) * stride), min(reach_r, h - 1))
    cols = (max(-reach_r, -(wo - 1) * stride), min(reach_r, w - 1))
    if rows[0] > rows[1] or cols[0] > cols[1]:  # nothing reaches the image: keep one zero tap
        rows, cols = (0, 0), (0, 0)
    return rows, cols
