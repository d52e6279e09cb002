"""Backend ``torch-naive``: materialise each layer's dense kernel exactly, then ``conv2d``.

Gradients come from torch autograd through the kernel construction (``impls._math``),
except ``dau``'s displacement gradient under ``mu_grad="gauss"``, which is DAU IJCV
Eq. 16 (reference/README.md section 2).

MACs (reference/README.md section 8), ``P = N Ho Wo``, ``Kn`` the side of the kernel built in the run:
forward ``P F S Kh Kw``; backward ``2 P F S Kh Kw`` (input and kernel gradients) plus the
kernel-to-parameter chain ``F S K Kh Kw`` (negligible).  ``Kh, Kw`` is the window of offsets that
reach the image (``_math.window``); ``harness.costmodel.naive_kernel`` computes the same side.
"""

import torch
import torch.nn.functional as tnf

from .. import _autograd, _math


def conv(x, kern, rows, cols, stride, groups=1):
    """Strided correlation with a kernel covering offsets ``rows = (t0, t1)``, ``cols`` (``t0, u0 <= 0``).

    ``x [N,S,H,W]``, ``kern [F,S/groups,t1-t0+1,u1-u0+1]`` -> ``[N,F,Ho,Wo]`` on the zero-extended plane
    (``groups``: conv2d's channel groups).
    """
    h, w = x.shape[2:]
    ho, wo = _math.out_size(h, stride), _math.out_size(w, stride)
    bottom = max(0, (ho - 1) * stride + rows[1] - (h - 1))
    right = max(0, (wo - 1) * stride + cols[1] - (w - 1))
    xp = tnf.pad(x, (-cols[0], right, -rows[0], bottom))
    return tnf.conv2d(xp, kern, stride=stride, groups=groups)[:, :, :ho, :wo]


def _crop(x, radius, stride):
    """The offsets of a radius-``radius`` kernel that can read a pixel of ``x`` for some output.

    Never empty: it always holds offset 0.
    """
    h, w = x.shape[2:]
    rows, cols = _math.window(h, w, stride, _math.out_size(h, stride), _math.out_size(w, stride), radius)
    return rows, cols


def _add_bias(y, bias):
    return y if bias is None else y + bias[None, :, None, None]


def dau_kernel(weight, mu_x, mu_y, sigma, blur_radius, hw, stride):
    """Dense ``dau`` kernel ``W[f,s] = sum_k weight (G composed with unit k's bilinear stencil)``,
    cropped to the offsets that reach the image. -> ``(kern, rows, cols)``"""
    fy, wy = _math.bilinear(mu_y)
    fx, wx = _math.bilinear(mu_x)
    g = _math.gauss1d(sigma, blur_radius)
    reach = blur_radius + max(_math.reach(fy), _math.reach(fx))
    h, w = hw
    rows, cols = _math.window(h, w, stride, _math.out_size(h, stride), _math.out_size(w, stride), reach)
    return _math.stencil_kernel(weight, fy, fx, wy, wx, g, g, rows, cols), rows, cols


class _GaussMuGrad(torch.autograd.Function):
    """Zero in the forward; in the backward, the Eq. 16 gradient of ``mu_x``, ``mu_y``:
    ``weight[f,s,k] * <dL/dW_dense[f,s], Dx composed with unit k's stencil>``."""

    @staticmethod
    def forward(ctx, mu_x, mu_y, x, weight, sigma, blur_radius, stride, groups):
        ctx.save_for_backward(mu_x, mu_y, x, weight, sigma)
        ctx.hp = (blur_radius, stride, groups)
        h, w = x.shape[2:]
        return x.new_zeros(x.shape[0], weight.shape[0], _math.out_size(h, stride), _math.out_size(w, stride))

    @staticmethod
    def backward(ctx, dy):
        mu_x, mu_y, x, weight, sigma = ctx.saved_tensors
        blur_radius, stride, groups = ctx.hp
        fy, wy = _math.bilinear(mu_y)
        fx, wx = _math.bilinear(mu_x)
        g, gd = _math.gauss1d(sigma, blur_radius), _math.gauss_dx1d(sigma, blur_radius)
        reach = blur_radius + max(_math.reach(fy), _math.reach(fx))
        h, w = x.shape[2:]
        rows, cols = _math.window(h, w, stride, dy.shape[2], dy.shape[3], reach)
        kh, kw = rows[1] - rows[0] + 1, cols[1] - cols[0] + 1
        # dL/dW for the dense kernel: the correlation's kernel gradient.
        bottom = max(0, (dy.shape[2] - 1) * stride + rows[1] - (h - 1))
        right = max(0, (dy.shape[3] - 1) * stride + cols[1] - (w - 1))
        xp = tnf.pad(x, (-cols[0], right, -rows[0], bottom))
        xp = xp[:, :, : (dy.shape[2] - 1) * stride + kh, : (dy.shape[3] - 1) * stride + kw]
        shape = (weight.shape[0], weight.shape[1], kh, kw)
        dk = torch.nn.grad.conv2d_weight(xp, shape, dy, stride=stride, groups=groups)
        out = []
        for br, bc in ((g, gd), (gd, g)):  # Dx = outer(g, gd), Dy = outer(gd, g) (reference/README.md section 2)
            ry = _math.stencil_axis(fy, wy, br, *rows)  # [F,S,K,kh]
            rx = _math.stencil_axis(fx, wx, bc, *cols)  # [F,S,K,kw]
            out.append(weight * torch.einsum("fstu,fskt,fsku->fsk", dk, ry, rx))
        return out[0], out[1], None, None, None, None, None, None


def dau(t, hp):
    """``x [N,S,H,W]``, ``weight, mu_x, mu_y [F,S/G,K]``, 0-d ``sigma`` -> ``[N,F,Ho,Wo]``."""
    x, weight, mu_x, mu_y, bias = t["x"], t["weight"], t["mu_x"], t["mu_y"], t["bias"]
    stride, blur_radius, mu_grad = hp["stride"], hp["blur_radius"], hp["mu_grad"]
    sig = t["sigma"].reshape(())
    if mu_grad == "gauss":
        mx, my = mu_x.detach(), mu_y.detach()
    else:
        mx, my = mu_x, mu_y
    kern, rows, cols = dau_kernel(weight, mx, my, sig, blur_radius, x.shape[2:], stride)
    groups = hp["groups"]
    y = conv(x, kern, rows, cols, stride, groups)
    if mu_grad == "gauss" and (mu_x.requires_grad or mu_y.requires_grad):
        y = y + _GaussMuGrad.apply(mu_x, mu_y, x.detach(), weight.detach(), sig.detach(), blur_radius, stride, groups)
    return _add_bias(y, bias)


def dau_gauss(t, hp):
    """Dense ``sum_k weight Gk`` of side ``2R+1`` (reference/README.md section 3) -> ``[N,F,Ho,Wo]``."""
    x, weight, sigma, bias, radius, stride = t["x"], t["weight"], t["sigma"], t["bias"], hp["radius"], hp["stride"]
    mu_x, mu_y = t["mu_x"], t["mu_y"]
    sig = sigma if sigma.dim() == 3 else sigma.reshape(()).expand(weight.shape)
    rows, cols = _crop(x, radius, stride)
    kern = torch.einsum("fsk,fsktu->fstu", weight, _math.unit_gaussians(mu_x, mu_y, sig, radius, rows, cols))
    return _add_bias(conv(x, _math.flush_subnormal(kern), rows, cols, stride, hp["groups"]), bias)


def acu_kernel(weight, pos_x, pos_y, hw, stride):
    """Dense ``acu`` kernel: each synapse's bilinear stencil scaled by its weight. -> ``(kern, rows, cols)``"""
    f_, s_, k_ = weight.shape
    px, py = pos_x.reshape(-1, k_), pos_y.reshape(-1, k_)
    grp = torch.arange(f_, device=weight.device) // (f_ // px.shape[0])
    fy, wy = _math.bilinear(py[grp][:, None, :].expand(f_, s_, k_))
    fx, wx = _math.bilinear(px[grp][:, None, :].expand(f_, s_, k_))
    h, w = hw
    reach = max(_math.reach(fy), _math.reach(fx))
    rows, cols = _math.window(h, w, stride, _math.out_size(h, stride), _math.out_size(w, stride), reach)
    one = weight.new_ones(1)
    return _math.stencil_kernel(weight, fy, fx, wy, wx, one, one, rows, cols), rows, cols


def acu(t, hp):
    """``weight [F,S,K]``, positions ``[K]`` or ``[P,K]`` -> ``[N,F,Ho,Wo]``."""
    x, stride = t["x"], hp["stride"]
    kern, rows, cols = acu_kernel(t["weight"], t["pos_x"], t["pos_y"], x.shape[2:], stride)
    return _add_bias(conv(x, kern, rows, cols, stride), t["bias"])


def njet(t, hp):
    """Dense ``sum_j alpha_j B_j`` of side ``2r+1`` -> ``[N,F,Ho,Wo]``."""
    x, alpha, bias, order, radius, stride = t["x"], t["alpha"], t["bias"], hp["order"], hp["radius"], hp["stride"]
    rows, cols = _crop(x, radius, stride)
    d = _math.gauss_derivs1d(t["sigma"].reshape(()), radius, order)
    dr, dc = d[:, rows[0] + radius : rows[1] + radius + 1], d[:, cols[0] + radius : cols[1] + radius + 1]
    basis = torch.stack([torch.outer(dr[b], dc[a]) for a, b in _math.njet_pairs(order)])
    kern = torch.einsum("fsj,jtu->fstu", alpha, basis)
    return _add_bias(conv(x, kern, rows, cols, stride, hp["groups"]), bias)


# Every layer in differentiable torch code: torch autograd gives the gradients, to any order.
OPS = {
    "dau": _autograd.Differentiable(dau),
    "dau_gauss": _autograd.Differentiable(dau_gauss),
    "acu": _autograd.Differentiable(acu),
    "njet": _autograd.Differentiable(njet),
}
