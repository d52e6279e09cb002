"""rfbench layers: the public functional API of reference/README.md section 6.

Every function validates its arguments (reference/README.md section 7), picks a backend from the registry and
is differentiable in every tensor argument through torch autograd, whatever the backend.  How a
call runs (``impls._ops``): eagerly on real tensors; as the custom operator
``torch.ops.rfbench.<layer>`` under ``torch.compile`` (one opaque op, no graph break) and for
meta or fake tensors (shapes without computing). Default radii come from ``sigma``'s value when
the layer runs, never from a traced value. Under ``torch.autocast`` the layers follow autocast's
float32 rule (float16/bfloat16 arguments computed in float32). Double backward (gradient
penalties) works on ``torch-naive``; the other backends refuse it with an error that says so.
Values (NaN/inf, ``sigma > 0``) are checked without synchronising a device: see
``set_device_value_checks`` and ``impls._validate``.
"""

# _ops and _validate import torch: loaded on first call, so ``import impls`` (and ``rfbench backends``) stays fast.
from ._registry import BACKENDS, BackendUnavailable, available_backends
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
    "set_device_value_checks",
]


def dau_conv2d(x, weight, mu_x, mu_y, sigma, bias=None, *, stride=1, blur_radius=None, mu_grad="exact", backend="auto"):
    """DAU convolution, efficient form (reference/README.md section 2; DAU IJCV Eq. 13-14).

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
    from . import _ops

    hp = {"stride": stride, "blur_radius": blur_radius, "mu_grad": mu_grad}
    return _ops.call("dau", backend, (x, weight, mu_x, mu_y, sigma, bias), hp)


def dau_gauss_conv2d(x, weight, mu_x, mu_y, sigma, bias=None, *, radius, stride=1, backend="auto"):
    """DAU with per-unit Gaussian kernels of side ``2 radius + 1`` (reference/README.md section 3).

    ``x [N,S,H,W]``; ``weight, mu_x, mu_y [F,S,K]``; ``sigma`` a positive scalar or ``[F,S,K]``;
    ``bias [F]`` optional. Returns ``[N, F, Ho, Wo]``.
    """
    from . import _ops

    return _ops.call("dau_gauss", backend, (x, weight, mu_x, mu_y, sigma, bias), {"radius": radius, "stride": stride})


def acu_conv2d(x, weight, pos_x, pos_y, bias=None, *, stride=1, backend="auto"):
    """Active convolution unit (reference/README.md section 4; ACU Eq. 3-5).

    ``x [N,S,H,W]``; ``weight [F,S,K]``; ``pos_x, pos_y`` ``[K]`` (shared by the layer) or
    ``[P,K]`` (channel ``f`` uses group ``f // (F/P)``); ``bias [F]`` optional.
    Returns ``[N, F, Ho, Wo]``.
    """
    from . import _ops

    return _ops.call("acu", backend, (x, weight, pos_x, pos_y, bias), {"stride": stride})


def njet_conv2d(x, alpha, sigma, bias=None, *, order, extent=2.0, radius=None, stride=1, backend="auto"):
    """N-Jet: Gaussian-derivative basis up to ``order`` with learned scale (reference/README.md section 5).

    ``x [N,S,H,W]``; ``alpha [F,S,J]`` with ``J = (order+1)(order+2)/2``; ``sigma`` positive
    scalar; ``radius`` default ``ceil(extent * sigma)``; ``bias [F]`` optional.
    Returns ``[N, F, Ho, Wo]``.
    """
    from . import _ops

    hp = {"order": order, "extent": extent, "radius": radius, "stride": stride}
    return _ops.call("njet", backend, (x, alpha, sigma, bias), hp)


def set_device_value_checks(enabled):
    """Turn the NaN/inf and ``sigma > 0`` checks of device tensors on or off (see ``impls._validate``)."""
    from . import _validate

    return _validate.set_device_value_checks(enabled)
