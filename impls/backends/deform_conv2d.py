"""Peer backend ``deform-conv2d``: ``torchvision.ops.deform_conv2d`` behind our ACU signature,
through the exact mapping of reference/README.md section 12.  Not our code: torchvision's kernel,
differentiated by its own backward.

ACU with one shared set of positions ``[K]`` is ``deform_conv2d`` with a ``1 x K`` kernel
(``weight[:, :, None, :]``), ``padding = (0, K // 2)`` and constant offsets
``(pos_y[t], pos_x[t] + K // 2 - t)`` for tap ``t``: deform_conv2d samples tap ``t`` of output
``(i, j)`` at ``(i s + dy_t, j s - K // 2 + t + dx_t)`` and ACU at ``(i s + pos_y, j s + pos_x)``,
both bilinear on the zero-extended plane.  Its output is ``floor((W + 2 (K // 2) - K) / s) + 1``
wide (one more than ``ceil(W / s)`` for even ``K`` at ``s = 1``), cropped to ``ceil(W / s)``.

Refused (``Inexpressible``): positions ``[P, K]`` (groups of positions: deform_conv2d's offset
groups split the input channels, not the output channels), a position within the rounding of its
coordinate of an integer where the position gradient is wanted (its floor may fall on the other
side: the position gradient jumps there), and any hyper-parameter it does not know set to other
than its default.  The check reads the positions on the host (a synchronisation on a device).
"""

import torch

from ...reference.layers import LAYERS
from .. import _autograd
from .._registry import Inexpressible

KNOWN = {"stride"}


def _refuse(why):
    raise Inexpressible(f"deform_conv2d cannot express this acu call exactly: {why}")


def _near_integer(pos, mag):
    """Whether a position lies within the rounding of a coordinate of magnitude ``mag`` of an integer
    without being one (an integer position is exact: torchvision's floor gives our right derivative)."""
    p = pos.detach()
    tol = 2 * torch.finfo(p.dtype).eps * (p.abs() + mag + 1)
    dist = (p - torch.round(p)).abs()
    return bool(((dist > 0) & (dist <= tol)).any())


def acu(t, hp):
    """``acu`` with shared positions ``[K]`` through ``deform_conv2d`` -> ``[N, F, Ho, Wo]``."""
    from torchvision.ops import deform_conv2d

    defaults = LAYERS["acu"].defaults()
    for name, value in hp.items():
        if name not in KNOWN and value != defaults.get(name, object()):
            _refuse(f"hyper-parameter {name}={value!r} has no deform_conv2d counterpart")
    x, w, px, py, bias = t["x"], t["weight"], t["pos_x"], t["pos_y"], t["bias"]
    k, s = w.shape[2], hp["stride"]
    h, wd = x.shape[2:]
    if torch.is_grad_enabled() and (px.requires_grad or py.requires_grad):
        mag = 2 * (k + float(torch.cat([px.reshape(-1), py.reshape(-1)]).detach().abs().max())) + max(h, wd) + s
        if _near_integer(px, mag) or _near_integer(py, mag):
            _refuse("a position within rounding of an integer, where its position gradient may jump")
    if px.dim() == 1:
        return _deform(deform_conv2d, x, w, px, py, bias, s)
    # Groups of positions [P, K]: output channel f uses group f // (F / P), one call per group.
    per = w.shape[0] // px.shape[0]
    parts = [
        _deform(deform_conv2d, x, w[p * per : (p + 1) * per], px[p], py[p], _slice(bias, p, per), s)
        for p in range(px.shape[0])
    ]
    return torch.cat(parts, 1)


def _slice(bias, p, per):
    return None if bias is None else bias[p * per : (p + 1) * per]


def _deform(deform_conv2d, x, w, px, py, bias, s):
    """One ``deform_conv2d`` call: ``1 x K`` kernel, constant offsets, cropped to ``ceil(W / s)``."""
    k = w.shape[2]
    n, _, h, wd = x.shape
    taps = torch.arange(k, device=x.device, dtype=x.dtype)
    off = torch.stack([py, px + k // 2 - taps], -1).reshape(1, 2 * k, 1, 1)
    ho, wo = -(-h // s), -(-wd // s)
    wide = (wd + 2 * (k // 2) - k) // s + 1
    off = off.expand(n, 2 * k, ho, wide)
    y = deform_conv2d(x, off, w[:, :, None, :], bias, stride=s, padding=(0, k // 2))
    return y[..., :wo]


OPS = {"acu": _autograd.Differentiable(acu)}
