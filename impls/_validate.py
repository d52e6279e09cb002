"""Argument checks of SPEC.md section 7, run once at the public entry points.

Every failure names the function, the argument, what was expected and what came.
"""

import math
import numbers

import torch


def _fail(exc, fn, name, expected, got):
    raise exc(f"{fn}: argument '{name}' expected {expected}, got {got}")


def _desc(t):
    return f"shape {tuple(t.shape)}, {t.dtype} on {t.device}"


def input_x(fn, x):
    """``x``: a 4-D floating tensor ``[N, S, H, W]`` with ``S, H, W >= 1``."""
    if not isinstance(x, torch.Tensor):
        _fail(TypeError, fn, "x", "a torch.Tensor", type(x).__name__)
    if not x.dtype.is_floating_point:
        _fail(TypeError, fn, "x", "a floating-point dtype", x.dtype)
    if x.dim() != 4:
        _fail(ValueError, fn, "x", "a 4-D tensor [N, S, H, W]", f"{x.dim()}-D {_desc(x)}")
    if min(x.shape[1:]) < 1:
        _fail(ValueError, fn, "x", "S, H, W >= 1", f"shape {tuple(x.shape)}")


def tensor(fn, name, t, x, shape=None, expected=None):
    """A tensor parameter in ``x``'s dtype and device, of ``shape`` when given."""
    if not isinstance(t, torch.Tensor):
        _fail(TypeError, fn, name, "a torch.Tensor", type(t).__name__)
    if t.dtype != x.dtype:
        _fail(TypeError, fn, name, f"dtype {x.dtype} (that of x)", t.dtype)
    if t.device != x.device:
        _fail(ValueError, fn, name, f"device {x.device} (that of x)", t.device)
    if shape is not None and tuple(t.shape) != tuple(shape):
        _fail(ValueError, fn, name, expected or f"shape {tuple(shape)}", f"shape {tuple(t.shape)}")


def finite(fn, name, t):
    """No NaN or inf (displacements, positions, sigma)."""
    if t.numel() and not bool(torch.isfinite(t).all()):
        _fail(ValueError, fn, name, "finite values", "NaN or inf")


def positive(fn, name, t):
    finite(fn, name, t)
    if t.numel() and not bool((t > 0).all()):
        _fail(ValueError, fn, name, "values > 0", f"min {float(t.min()):g}")


def scalar(fn, name, value, x):
    """A positive, finite scalar: a 0-d or one-element tensor, or a Python real."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = torch.tensor(float(value), dtype=x.dtype, device=x.device)
    tensor(fn, name, value, x)
    if value.dim() > 1 or value.numel() != 1:
        _fail(ValueError, fn, name, "a scalar (0-d or one-element tensor)", f"shape {tuple(value.shape)}")
    positive(fn, name, value)
    return value


def integer(fn, name, value, low, allow_none=False):
    """A Python integer ``>= low`` (or None where allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(TypeError, fn, name, f"an int >= {low}", f"{type(value).__name__} {value!r}")
    if value < low:
        _fail(ValueError, fn, name, f"an int >= {low}", value)
    return int(value)


def choice(fn, name, value, options):
    if value not in options:
        _fail(ValueError, fn, name, f"one of {options}", repr(value))
    return value


def real(fn, name, value):
    """A positive, finite Python real."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        _fail(ValueError, fn, name, "a finite real > 0", repr(value))
    return float(value)


def unit_weights(fn, name, weight, x):
    """``weight [F,S,K]`` with ``S`` of ``x`` and ``F, K >= 1``."""
    tensor(fn, name, weight, x)
    s_ = x.shape[1]
    if weight.dim() != 3 or weight.shape[1] != s_ or weight.shape[0] < 1 or weight.shape[2] < 1:
        _fail(
            ValueError, fn, name, f"shape [F, {s_}, K] with F, K >= 1 (S = x.shape[1])", f"shape {tuple(weight.shape)}"
        )


def units(fn, x, weight, names_xy, ax, ay, wname="weight"):
    """``weight [F,S,K]`` with ``S`` of ``x``, and displacement tensors of the same shape, finite."""
    unit_weights(fn, wname, weight, x)
    for name, t in zip(names_xy, (ax, ay)):
        tensor(fn, name, t, x, weight.shape, f"shape {tuple(weight.shape)} (that of {wname})")
        finite(fn, name, t)


def bias(fn, b, x, f_):
    if b is not None:
        tensor(fn, "bias", b, x, (f_,), f"shape ({f_},) (F of the weights)")


def dau(x, weight, mu_x, mu_y, sigma, b, stride, blur_radius, mu_grad, fn="dau_conv2d"):
    """-> ``(sigma as a tensor, stride, blur_radius resolved)``."""
    input_x(fn, x)
    units(fn, x, weight, ("mu_x", "mu_y"), mu_x, mu_y)
    sigma = scalar(fn, "sigma", sigma, x)
    bias(fn, b, x, weight.shape[0])
    stride = integer(fn, "stride", stride, 1)
    blur_radius = integer(fn, "blur_radius", blur_radius, 0, allow_none=True)
    if blur_radius is None:
        blur_radius = int(math.ceil(3.0 * float(sigma.detach())))
    choice(fn, "mu_grad", mu_grad, ("exact", "gauss"))
    return sigma, stride, blur_radius


def dau_gauss(x, weight, mu_x, mu_y, sigma, b, radius, stride, fn="dau_gauss_conv2d"):
    """-> ``(sigma as a tensor, radius, stride)``; ``sigma`` is a scalar or ``[F,S,K]``."""
    input_x(fn, x)
    units(fn, x, weight, ("mu_x", "mu_y"), mu_x, mu_y)
    if isinstance(sigma, torch.Tensor) and sigma.dim() == 3:
        tensor(fn, "sigma", sigma, x, weight.shape, f"a scalar or shape {tuple(weight.shape)} (that of weight)")
        positive(fn, "sigma", sigma)
    else:
        sigma = scalar(fn, "sigma", sigma, x)
    bias(fn, b, x, weight.shape[0])
    radius = integer(fn, "radius", radius, 0)
    return sigma, radius, integer(fn, "stride", stride, 1)


def acu(x, weight, pos_x, pos_y, b, stride, fn="acu_conv2d"):
    """Positions ``[K]`` or ``[P,K]`` with ``F`` divisible by ``P`` -> ``stride``."""
    input_x(fn, x)
    unit_weights(fn, "weight", weight, x)
    f_, _, k_ = weight.shape
    for name, p in (("pos_x", pos_x), ("pos_y", pos_y)):
        tensor(fn, name, p, x)
        if p.dim() not in (1, 2) or p.shape[-1] != k_ or (p.dim() == 2 and (p.shape[0] < 1 or f_ % p.shape[0])):
            _fail(
                ValueError, fn, name, f"shape [{k_}] or [P, {k_}] with P dividing F = {f_}", f"shape {tuple(p.shape)}"
            )
        finite(fn, name, p)
    if pos_x.shape != pos_y.shape:
        _fail(ValueError, fn, "pos_y", f"shape {tuple(pos_x.shape)} (that of pos_x)", f"shape {tuple(pos_y.shape)}")
    bias(fn, b, x, f_)
    return integer(fn, "stride", stride, 1)


def njet(x, alpha, sigma, b, order, extent, radius, stride, fn="njet_conv2d"):
    """-> ``(sigma as a tensor, order, radius resolved, stride)``."""
    input_x(fn, x)
    order = integer(fn, "order", order, 0)
    j_ = (order + 1) * (order + 2) // 2
    tensor(fn, "alpha", alpha, x)
    s_ = x.shape[1]
    if alpha.dim() != 3 or alpha.shape[1] != s_ or alpha.shape[2] != j_ or alpha.shape[0] < 1:
        _fail(
            ValueError,
            fn,
            "alpha",
            f"shape [F, {s_}, {j_}] (S = x.shape[1], J for order {order})",
            f"shape {tuple(alpha.shape)}",
        )
    sigma = scalar(fn, "sigma", sigma, x)
    bias(fn, b, x, alpha.shape[0])
    extent = real(fn, "extent", extent)
    radius = integer(fn, "radius", radius, 0, allow_none=True)
    if radius is None:
        radius = int(math.ceil(extent * float(sigma.detach())))
    return sigma, order, radius, integer(fn, "stride", stride, 1)
