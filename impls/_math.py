"""The layers' mathematics in torch ops, written once and shared by every backend.

Everything here is differentiable through torch autograd and works on any device and
floating dtype.  Shapes follow SPEC.md: ``[F,S,K]`` per-unit parameters, kernels
``[F,S,kh,kw]`` in correlation orientation (tap ``(t, u)`` reads ``x[i*s + t, j*s + u]``).
"""

import math

import torch


def out_size(n, stride):
    """``ceil(n / stride)`` (SPEC section 1)."""
    return -(-n // stride)


def taps(r, like):
    """Integer offsets ``-r..r`` in ``like``'s dtype and device. -> ``[2r+1]``"""
    return torch.arange(-r, r + 1, dtype=like.dtype, device=like.device)


def gauss1d(sigma, r):
    """Discretely normalised Gaussian ``g(t)``, ``|t| <= r`` (DAU IJCV Eq. 3-4). -> ``[2r+1]``"""
    e = torch.exp(-(taps(r, sigma) ** 2) / (2 * sigma**2))
    return e / e.sum()


def gauss1d_dsigma(sigma, r):
    """``d g / d sigma`` with ``r`` fixed (quotient rule), for hand-written backwards. -> ``[2r+1]``"""
    t = taps(r, sigma)
    e = torch.exp(-(t**2) / (2 * sigma**2))
    de = e * t**2 / sigma**3
    z = e.sum()
    return de / z - e * de.sum() / z**2


def gauss_dx1d(sigma, r):
    """``(u / sigma^2) g(u)``: the 1-D factor of DAU IJCV Eq. 16's ``Dx`` and ``Dy``. -> ``[2r+1]``"""
    return taps(r, sigma) / sigma**2 * gauss1d(sigma, r)


def gauss_derivs1d(sigma, r, order):
    """Scale-normalised Gaussian derivatives ``d_m(t)``, ``m = 0..order`` (SPEC section 5).

    ``d_m = sigma^m (-1/(sigma sqrt2))^m H_m(t / (sigma sqrt2)) g(t)`` -> ``[order+1, 2r+1]``.
    """
    t = taps(r, sigma)
    z = t / (sigma * math.sqrt(2.0))
    g = gauss1d(sigma, r)
    h = [torch.ones_like(z), 2 * z]
    for m in range(2, order + 1):
        h.append(2 * z * h[m - 1] - 2 * (m - 1) * h[m - 2])
    return torch.stack([(-1 / math.sqrt(2.0)) ** m * h[m] * g for m in range(order + 1)])


def njet_pairs(order):
    """Basis index ``j`` -> ``(a, b)``: ``a``-th derivative along x, ``b``-th along y (SPEC section 5)."""
    return [(n - b, b) for n in range(order + 1) for b in range(n + 1)]


def n_basis(order):
    """``J = (order+1)(order+2)/2``."""
    return (order + 1) * (order + 2) // 2


def njet_basis(sigma, r, order):
    """``B_j(t, u) = d_b(t) d_a(u)`` -> ``[J, 2r+1, 2r+1]``."""
    d = gauss_derivs1d(sigma, r, order)
    return torch.stack([torch.outer(d[b], d[a]) for a, b in njet_pairs(order)])


def split(mu):
    """Integer part and fraction of displacements: ``mu = floor + frac``, ``frac`` in ``[0, 1)``.

    The fraction carries ``mu``'s gradient (floor held fixed: the bilinear derivative rule
    of SPEC section 1); the floor is returned as int64.
    """
    fl = torch.floor(mu.detach())
    return fl.to(torch.int64), mu - fl


def reach(fl):
    """Largest ``|floor|`` or ``|floor + 1|`` over all units: the bilinear stencil's radius."""
    if fl.numel() == 0:
        return 0
    return int(torch.maximum(fl.abs(), (fl + 1).abs()).max())


def stencil_kernel(coef, fy, fx, ay, ax, base, rows, cols):
    """Dense correlation kernel ``sum_k coef[f,s,k] * (base composed with unit k's bilinear stencil)``.

    ``coef, ay, ax [F,S,K]`` (fractions), ``fy, fx`` int64 ``[F,S,K]`` (floors), ``base [b,b]``
    (odd side, centred).  Only taps ``t in rows = (t0, t1)`` and ``u in cols`` (inclusive
    offset ranges) are kept; the others fall outside every image the kernel is applied to.
    -> ``[F, S, t1-t0+1, u1-u0+1]``, differentiable in ``coef``, ``ay``, ``ax`` and ``base``.
    """
    f_, s_, k_ = coef.shape
    rb = base.shape[0] // 2
    kh, kw = rows[1] - rows[0] + 1, cols[1] - cols[0] + 1
    dev = coef.device
    off = torch.arange(-rb, rb + 1, device=dev)
    parts, index = [], []
    for da, wy in ((0, 1 - ay), (1, ay)):
        for db, wx in ((0, 1 - ax), (1, ax)):
            r = (fy + da)[..., None, None] + off[:, None] - rows[0]  # [F,S,K,b,1]
            c = (fx + db)[..., None, None] + off[None, :] - cols[0]  # [F,S,K,1,b]
            ok = (r >= 0) & (r < kh) & (c >= 0) & (c < kw)
            idx = torch.where(ok, r * kw + c, kh * kw)  # out-of-window taps go to a spill slot
            parts.append((coef * wy * wx)[..., None, None] * base)
            index.append(idx)
    vals = torch.stack(parts, 3).reshape(f_, s_, -1)
    idx = torch.stack(index, 3).reshape(f_, s_, -1)
    dense = vals.new_zeros(f_, s_, kh * kw + 1).scatter_add(2, idx, vals)
    return dense[:, :, :-1].reshape(f_, s_, kh, kw)


def unit_gaussians(mu_x, mu_y, sigma, radius):
    """Normalised unit Gaussians of ``dau_gauss`` (SPEC section 3) -> ``[F,S,K,2R+1,2R+1]``."""
    t = taps(radius, mu_x)
    ex = t - mu_x[..., None, None]  # u - mu_x, along the last axis
    ey = t[:, None] - mu_y[..., None, None]  # t - mu_y, along rows
    arg = -(ex**2 + ey**2) / (2 * sigma[..., None, None] ** 2)
    # Shift by the largest exponent before exp: the normalised value is unchanged, and units
    # centred far outside the window do not underflow to 0/0 in float32.
    e = torch.exp(arg - arg.detach().amax(dim=(-2, -1), keepdim=True))
    return e / e.sum(dim=(-2, -1), keepdim=True)


def window(h, w, stride, ho, wo, reach_r):
    """Offsets a kernel of radius ``reach_r`` needs: taps outside ``[-(Ho-1)s, H-1]`` read no pixel of any output.

    -> ``(rows, cols)`` inclusive offset ranges.
    """
    rows = (max(-reach_r, -(ho - 1) * stride), min(reach_r, h - 1))
    cols = (max(-reach_r, -(wo - 1) * stride), min(reach_r, w - 1))
    if rows[0] > rows[1] or cols[0] > cols[1]:  # nothing reaches the image: keep one zero tap
        rows, cols = (0, 0), (0, 0)
    return rows, cols
