"""rfbench layers: the public functional API of reference/README.md section 6 (``rfbench.<name>``).

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

The layers' facts (tensor arguments, hyper-parameters and their defaults, radius rules) live in
their table, ``LAYERS`` (``reference/layers.py``); the signatures below restate it for readers
(``suites/test_layers.py`` holds them to it).  The backends are in ``impls/backends/``, whose
``__init__`` writes down the interface each provides.

    >>> import torch, rfbench
    >>> x = torch.randn(2, 4, 9, 8)
    >>> w, mu = torch.randn(6, 4, 2), 2 * torch.rand(6, 4, 2) - 1
    >>> rfbench.dau_conv2d(x, w, mu, -mu, 0.6, backend="torch-naive").shape
    torch.Size([2, 6, 9, 8])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# _ops and _validate import torch: loaded on first call, so ``import rfbench`` (and ``rfbench backends``) stays fast.
from ..reference.layers import LAYERS
from ._registry import BACKENDS, BackendUnavailable, Inexpressible, available_backends
from ._registry import table as backend_table

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "dau_conv2d",
    "dau_gauss_conv2d",
    "acu_conv2d",
    "njet_conv2d",
    "available_backends",
    "backend_table",
    "BackendUnavailable",
    "Inexpressible",
    "BACKENDS",
    "LAYERS",
    "set_device_value_checks",
]


def dau_conv2d(
    x: Tensor,
    weight: Tensor,
    mu_x: Tensor,
    mu_y: Tensor,
    sigma: Tensor | float,
    bias: Tensor | None = None,
    *,
    stride: int = 1,
    blur_radius: int | None = None,
    mu_grad: str = "exact",
    groups: int = 1,
    backend: str = "auto",
) -> Tensor:
    """DAU convolution, efficient form (reference/README.md section 2; DAU IJCV Eq. 13-14).

    Every input channel is blurred once by a Gaussian of scale ``sigma``; each unit ``k`` of each
    channel pair ``(f, s)`` reads the blurred map at its displacement and weighs it.

    Args:
        x: ``[N, S, H, W]`` input.
        weight, mu_x, mu_y: ``[F, S/groups, K]`` unit weights and displacements (columns, rows; pixels).
        sigma: positive scalar (0-d tensor or float), the layer's Gaussian scale.
        bias: optional ``[F]``.
        stride: int >= 1; ``Ho = ceil(H / stride)``.
        blur_radius: radius of the blur ``G``; default ``ceil(3 sigma)``.
        mu_grad: ``"exact"`` (derivative of the bilinear forward) or ``"gauss"`` (DAU IJCV Eq. 16).
        groups: channel groups as ``nn.Conv2d``'s (dividing S and F); ``groups = S`` is depthwise.
        backend: a name of ``BACKENDS`` or ``"auto"``.
    Returns:
        ``[N, F, Ho, Wo]``.

    Example:
        >>> import torch, rfbench
        >>> x = torch.randn(2, 8, 16, 16)
        >>> weight, mu_x, mu_y = torch.randn(12, 8, 2), 4 * torch.rand(12, 8, 2) - 2, 4 * torch.rand(12, 8, 2) - 2
        >>> rfbench.dau_conv2d(x, weight, mu_x, mu_y, 0.5, stride=2, backend="torch-fast").shape
        torch.Size([2, 12, 8, 8])
    """
    from . import _ops

    hp = {"stride": stride, "blur_radius": blur_radius, "mu_grad": mu_grad, "groups": groups}
    return _ops.call("dau", backend, (x, weight, mu_x, mu_y, sigma, bias), hp)


def dau_gauss_conv2d(
    x: Tensor,
    weight: Tensor,
    mu_x: Tensor,
    mu_y: Tensor,
    sigma: Tensor | float,
    bias: Tensor | None = None,
    *,
    radius: int,
    stride: int = 1,
    groups: int = 1,
    backend: str = "auto",
) -> Tensor:
    """DAU with per-unit Gaussian kernels of side ``2 radius + 1`` (reference/README.md section 3).

    Args:
        x: ``[N, S, H, W]`` input.
        weight, mu_x, mu_y: ``[F, S/groups, K]`` unit weights and Gaussian centres (columns, rows; pixels).
        sigma: a positive scalar (0-d tensor or float), or ``[F, S/groups, K]``: one scale per unit.
        bias: optional ``[F]``.
        radius: int >= 0, the kernel's radius (required: no default).
        stride: int >= 1.
        groups: channel groups as ``nn.Conv2d``'s (dividing S and F); ``groups = S`` is depthwise.
        backend: a name of ``BACKENDS`` or ``"auto"``.
    Returns:
        ``[N, F, Ho, Wo]``.

    Example:
        >>> import torch, rfbench
        >>> x, weight, mu = torch.randn(1, 3, 10, 10), torch.randn(5, 3, 2), torch.rand(5, 3, 2)
        >>> rfbench.dau_gauss_conv2d(x, weight, mu, -mu, torch.full((5, 3, 2), 0.8), radius=3).shape
        torch.Size([1, 5, 10, 10])
    """
    from . import _ops

    hp = {"radius": radius, "stride": stride, "groups": groups}
    return _ops.call("dau_gauss", backend, (x, weight, mu_x, mu_y, sigma, bias), hp)


def acu_conv2d(
    x: Tensor,
    weight: Tensor,
    pos_x: Tensor,
    pos_y: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int = 1,
    backend: str = "auto",
) -> Tensor:
    """Active convolution unit (reference/README.md section 4; ACU Eq. 3-5).

    Args:
        x: ``[N, S, H, W]`` input.
        weight: ``[F, S, K]``, one weight per synapse and channel pair.
        pos_x, pos_y: ``[K]`` synapse positions shared by the layer, or ``[P, K]``: output channel
            ``f`` uses group ``f // (F / P)`` (``P`` divides ``F``).
        bias: optional ``[F]``.
        stride: int >= 1.
        backend: a name of ``BACKENDS`` or ``"auto"``.
    Returns:
        ``[N, F, Ho, Wo]``.

    Example: a 3 x 3 convolution as nine synapses on the integer grid.
        >>> import torch, rfbench
        >>> x, w = torch.randn(1, 2, 7, 7, dtype=torch.float64), torch.randn(4, 2, 3, 3, dtype=torch.float64)
        >>> t = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
        >>> pos_y, pos_x = t.repeat_interleave(3), t.repeat(3)
        >>> y = rfbench.acu_conv2d(x, w.reshape(4, 2, 9), pos_x, pos_y)
        >>> torch.allclose(y, torch.nn.functional.conv2d(x, w, padding=1))
        True
    """
    from . import _ops

    return _ops.call("acu", backend, (x, weight, pos_x, pos_y, bias), {"stride": stride})


def njet_conv2d(
    x: Tensor,
    alpha: Tensor,
    sigma: Tensor | float,
    bias: Tensor | None = None,
    *,
    order: int,
    extent: float = 2.0,
    radius: int | None = None,
    stride: int = 1,
    groups: int = 1,
    backend: str = "auto",
) -> Tensor:
    """N-Jet: Gaussian-derivative basis up to ``order`` with a learned scale (reference/README.md section 5).

    Args:
        x: ``[N, S, H, W]`` input.
        alpha: ``[F, S/groups, J]`` basis weights, ``J = (order+1)(order+2)/2`` (L, Lx, Ly, Lxx, Lxy, Lyy, ...).
        sigma: positive scalar (0-d tensor or float), the basis' scale.
        bias: optional ``[F]``.
        order: int >= 0, the highest derivative order.
        extent: the default radius is ``ceil(extent * sigma)``.
        radius: int >= 0, or None for that default.
        stride: int >= 1.
        groups: channel groups as ``nn.Conv2d``'s (dividing S and F); ``groups = S`` is depthwise.
        backend: a name of ``BACKENDS`` or ``"auto"``.
    Returns:
        ``[N, F, Ho, Wo]``.

    Example:
        >>> import torch, rfbench
        >>> x, alpha = torch.randn(2, 3, 12, 12), torch.randn(6, 3, 6)
        >>> rfbench.njet_conv2d(x, alpha, 1.2, order=2).shape
        torch.Size([2, 6, 12, 12])
    """
    from . import _ops

    hp = {"order": order, "extent": extent, "radius": radius, "stride": stride, "groups": groups}
    return _ops.call("njet", backend, (x, alpha, sigma, bias), hp)


def set_device_value_checks(enabled: bool) -> bool:
    """Turn the NaN/inf and ``sigma > 0`` checks of device tensors on or off (see ``impls._validate``);
    returns the previous setting.  Off by default: each check is a host-device synchronisation.

    Example:
        >>> import rfbench
        >>> old = rfbench.set_device_value_checks(True)
        >>> rfbench.set_device_value_checks(old)
        True
    """
    from . import _validate

    return _validate.set_device_value_checks(enabled)
