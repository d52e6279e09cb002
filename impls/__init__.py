"""rfbench layers: the public functional API of SPEC.md section 6.

Every function validates its arguments (SPEC section 7), resolves default radii from
``sigma``'s value, picks a backend from the registry and is differentiable in every
tensor argument through torch autograd, whatever the backend.
"""

# Argument checks import torch: loaded on first call, so ``import impls`` (and ``rfbench backends``) stays fast.
from ._registry import BACKENDS, BackendUnavailable, available_backends, select
from ._registry import table as backend_table

__all__ = [
    "dau_conv2d",
    "dau_gauss_conv2d",
    "acu_conv2d",
    "njet_conv2d",
    "available_backends",
    "backend_table",
    "BackendUnavailable",
    "BACKENDS",
]


def dau_conv2d(x, weight, mu_x, mu_y, sigma, bias=None, *, stride=1, blur_radius=None, mu_grad="exact", backend="auto"):
    """DAU convolution, efficient form (SPEC section 2; DAU IJCV Eq. 13-14).

    Args:
        x: ``[N, S, H, W]`` input.
        weight, mu_x, mu_y: ``[F, S, K]`` unit weights and displacements (columns, rows; pixels).
        sigma: positive scalar (0-d tensor or float), the layer's Gaussian scale.
        bias: optional ``[F]``.
        stride: int >= 1; ``Ho = ceil(H / stride)``.
        blur_radius: radius of the blur ``G``; default ``ceil(3 sigma)``.
        mu_grad: ``"exact"`` (derivative of the bilinear forward) or ``"gauss"`` (DAU IJCV Eq. 16).
        backend: a name of ``BACKENDS`` or ``"auto"``.
    Returns:
        ``[N, F, Ho, Wo]``.
    """
    from . import _validate

    sigma, stride, blur_radius = _validate.dau(x, weight, mu_x, mu_y, sigma, bias, stride, blur_radius, mu_grad)
    _, mod = select(backend, "dau", x)
    return mod.dau(x, weight, mu_x, mu_y, sigma, bias, stride=stride, blur_radius=blur_radius, mu_grad=mu_grad)


def dau_gauss_conv2d(x, weight, mu_x, mu_y, sigma, bias=None, *, radius, stride=1, backend="auto"):
    """DAU with per-unit Gaussian kernels of side ``2 radius + 1`` (SPEC section 3).

    ``x [N,S,H,W]``; ``weight, mu_x, mu_y [F,S,K]``; ``sigma`` a positive scalar or ``[F,S,K]``;
    ``bias [F]`` optional. Returns ``[N, F, Ho, Wo]``.
    """
    from . import _validate

    sigma, radius, stride = _validate.dau_gauss(x, weight, mu_x, mu_y, sigma, bias, radius, stride)
    _, mod = select(backend, "dau_gauss", x)
    return mod.dau_gauss(x, weight, mu_x, mu_y, sigma, bias, radius=radius, stride=stride)


def acu_conv2d(x, weight, pos_x, pos_y, bias=None, *, stride=1, backend="auto"):
    """Active convolution unit (SPEC section 4; ACU Eq. 3-5).

    ``x [N,S,H,W]``; ``weight [F,S,K]``; ``pos_x, pos_y`` ``[K]`` (shared by the layer) or
    ``[P,K]`` (channel ``f`` uses group ``f // (F/P)``); ``bias [F]`` optional.
    Returns ``[N, F, Ho, Wo]``.
    """
    from . import _validate

    stride = _validate.acu(x, weight, pos_x, pos_y, bias, stride)
    _, mod = select(backend, "acu", x)
    return mod.acu(x, weight, pos_x, pos_y, bias, stride=stride)


def njet_conv2d(x, alpha, sigma, bias=None, *, order, extent=2.0, radius=None, stride=1, backend="auto"):
    """N-Jet: Gaussian-derivative basis up to ``order`` with learned scale (SPEC section 5).

    ``x [N,S,H,W]``; ``alpha [F,S,J]`` with ``J = (order+1)(order+2)/2``; ``sigma`` positive
    scalar; ``radius`` default ``ceil(extent * sigma)``; ``bias [F]`` optional.
    Returns ``[N, F, Ho, Wo]``.
    """
    from . import _validate

    sigma, order, radius, stride = _validate.njet(x, alpha, sigma, bias, order, extent, radius, stride)
    _, mod = select(backend, "njet", x)
    return mod.njet(x, alpha, sigma, bias, order=order, radius=radius, stride=stride)
