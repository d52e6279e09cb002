"""Peer backend ``dcls``: DCLS 0.1.1 (Khalfaoui-Hassani, Pellegrini and Masquelier, "Dilated
Convolution with Learnable Spacings", ``pip install dcls``) behind our DAU signatures, through the
exact mappings of reference/README.md section 12.  Not our code: its kernel construction
(``DCLS.construct.modules.ConstructKernel2d``, what ``Dcls2d`` builds its kernel with) and then
``conv2d`` with ``padding = side // 2``, as ``Dcls2d._conv_forward`` does for ``padding_mode="zeros"``.
Torch autograd differentiates DCLS's code.

- ``dau`` with ``blur_radius = 0`` is DCLS version ``v1`` (bilinear): ``P[0] = mu_x`` (v1 and gauss
  read ``P[0]`` as the column, v0 as the row), a square window of side ``2h + 1`` with
  ``h = ceil(max |mu|)``, so that every unit's 2 x 2 stencil lies inside it;
- ``dau_gauss`` is DCLS version ``gauss``: ``SIG = sigma - 0.27`` on both axes (DCLS's scale is
  ``|SIG| + 0.27``), a window of side ``2 radius + 1``;
- channel ``groups`` are ``Dcls2d``'s own (its kernel ``[F, S/G, side, side]``, then ``conv2d(groups=G)``).

DCLS divides every element by its in-window sum + 1e-7 (ours by the sum): the weight is multiplied
by ``(Z + 1e-7) / Z`` for the in-window sum ``Z`` (1 for v1; the separable Gaussian sum for gauss).
What the mapping cannot make exact is refused (``Inexpressible``): a blur, ``mu_grad="gauss"``, a
position outside the window, a scale ``<= 0.27``, a position gradient at (or within the coordinate's
rounding of) an integer position (DCLS's is 0 there: ``relu(1 - |X|)`` has derivative 0 at
``X = 0`` and ``|X| = 1``), and any hyper-parameter it does not know set to other than its default.
The window and those checks read the positions on the host (a synchronisation on a device).
"""

import functools
import math

import torch
import torch.nn.functional as tnf

from ...reference.layers import LAYERS
from .. import _autograd, _math
from .._registry import Inexpressible

SIG_OFFSET = 0.27  # DCLS gauss: the scale is |SIG| + 0.27 (ConstructKernel2d.forward_vgauss)
NORM_EPS = 1e-7  # DCLS: every element divided by its in-window sum + 1e-7
# The hyper-parameters the mappings express (``keep`` is ours: the taps that reach a pixel).
KNOWN = {
    "dau": {"stride", "blur_radius", "mu_grad", "keep", "groups"},
    "dau_gauss": {"radius", "stride", "keep", "groups"},
}


@functools.lru_cache(maxsize=32)
def _construct(f, s, g, k, side, version, device):
    """DCLS's kernel construction for ``[F, S/G, K]`` units (``S`` input channels in ``G`` channel groups, as
    ``Dcls2d(groups=G)`` builds it) in a ``side x side`` window (one instance per shape and device: it
    caches its index grid on first use)."""
    from DCLS.construct.modules import ConstructKernel2d

    return ConstructKernel2d(f, s, g, k, (side, side), version)


def _refuse(layer, why):
    raise Inexpressible(f"DCLS cannot express this {layer} call exactly: {why}")


def _check_hp(layer, hp):
    """Refuse a hyper-parameter the mapping does not know, unless it holds the layer's default."""
    defaults = LAYERS[layer].defaults()
    for name, value in hp.items():
        if name not in KNOWN[layer] and value != defaults.get(name, object()):
            _refuse(layer, f"hyper-parameter {name}={value!r} has no DCLS counterpart")


def _top(*ts):
    return max(float(t.detach().abs().max()) if t.numel() else 0.0 for t in ts)


def _near_integer(mu, half):
    """Whether a position lies within the rounding of DCLS's coordinate ``mu + half`` of an integer."""
    m = mu.detach()
    tol = 2 * torch.finfo(m.dtype).eps * (m.abs() + half + 1)
    return bool(((m - torch.round(m)).abs() <= tol).any())


def dau(t, hp):
    """``dau`` with ``blur_radius = 0`` as DCLS ``v1`` -> ``[N, F, Ho, Wo]``."""
    _check_hp("dau", hp)
    if hp["blur_radius"] != 0:
        _refuse("dau", f"DCLS v1 has no blur: blur_radius must be 0, got {hp['blur_radius']}")
    if hp["mu_grad"] != "exact":
        _refuse("dau", f"mu_grad={hp['mu_grad']!r}: DCLS differentiates its own (bilinear) forward only")
    x, weight, mx, my = t["x"], t["weight"], t["mu_x"], t["mu_y"]
    half = math.ceil(_top(mx, my))
    wants = torch.is_grad_enabled() and (mx.requires_grad or my.requires_grad)
    if wants and (_near_integer(mx, half) or _near_integer(my, half)):
        _refuse("dau", "a position at or within rounding of an integer, where DCLS's position gradient is 0")
    f_, s_, k_ = weight.shape
    # The radius-0 blur is the identity (g = [1], no gradient in sigma): written as ours so that sigma
    # gets its (zero) gradient; (1 + 1e-7) undoes DCLS's normalisation by the in-window sum (1) + 1e-7.
    g0 = _math.gauss1d(t["sigma"].reshape(()), 0)[0]
    w = weight * (g0 * g0) * (1.0 + NORM_EPS)
    g = hp.get("groups", 1)
    kern = _construct(f_, s_ * g, g, k_, 2 * half + 1, "v1", str(x.device))(w, torch.stack([mx, my]), None)
    return tnf.conv2d(x, kern, t["bias"], stride=hp["stride"], padding=half, groups=g)


def dau_gauss(t, hp):
    """``dau_gauss`` as DCLS ``gauss`` (equal scale on both axes) -> ``[N, F, Ho, Wo]``."""
    _check_hp("dau_gauss", hp)
    x, weight, mx, my, sigma = t["x"], t["weight"], t["mu_x"], t["mu_y"], t["sigma"]
    r = hp["radius"]
    if _top(mx, my) > r:
        _refuse("dau_gauss", f"a position outside DCLS's window |mu| <= radius = {r} (DCLS renormalises there)")
    sig = sigma if sigma.dim() == 3 else sigma.reshape(()).expand(weight.shape)
    if float(sig.detach().min()) <= SIG_OFFSET:
        _refuse("dau_gauss", f"a scale <= {SIG_OFFSET}: DCLS's scale is |SIG| + {SIG_OFFSET}")
    taps = _math.taps(r, x)
    z = [torch.exp(-((taps - m[..., None]) ** 2) / (2 * sig[..., None] ** 2)).sum(-1) for m in (mx, my)]
    w = weight * (1.0 + NORM_EPS / (z[0] * z[1]))  # (Z + 1e-7) / Z: the in-window sum Z is separable
    f_, s_, k_ = weight.shape
    big = (sig - SIG_OFFSET).expand(2, f_, s_, k_)
    g = hp.get("groups", 1)
    kern = _construct(f_, s_ * g, g, k_, 2 * r + 1, "gauss", str(x.device))(w, torch.stack([mx, my]), big)
    return tnf.conv2d(x, kern, t["bias"], stride=hp["stride"], padding=r, groups=g)


OPS = {"dau": _autograd.Differentiable(dau), "dau_gauss": _autograd.Differentiable(dau_gauss)}
