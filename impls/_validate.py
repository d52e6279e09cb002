"""Argument checks of reference/README.md section 7, run once at the public entry points.

Every failure names the function, the argument, what was expected and what came.

Two kinds of check, because only one of them can run without the data:

- Structure (types, shapes, dtypes, devices, hyper-parameters): ``check``, with the hyper-parameters
  checked against the layer's table (``hparams``) and the tensors by the layer's own shape rules.
  They read only metadata, so they also run on meta and fake tensors and while ``torch.compile``
  traces, and they never synchronise a device.
- Values (NaN/inf in displacements, positions and ``sigma``; ``sigma > 0``): ``values``. They read
  the data, so they run where reading it is free: on CPU tensors, every call (also inside a compiled
  graph, where the layer's custom operator runs them on the real tensors). On any other device they
  would synchronise host and device (a blocking copy per check, and no CUDA-graph capture), so they
  are skipped unless ``set_device_value_checks(True)`` asks for them; on meta tensors there is
  nothing to check. One value is read on the host anyway: ``sigma`` when a default radius is
  derived from it (``radius_from``), and it is checked there on every device.
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


_DEVICE_VALUES = [False]


def set_device_value_checks(enabled):
    """Also check values (NaN/inf, ``sigma > 0``) of tensors on non-CPU devices, at the cost of a host-device
    synchronisation per checked tensor. Off by default. -> the previous setting."""
    old, _DEVICE_VALUES[0] = _DEVICE_VALUES[0], bool(enabled)
    return old


def free_to_read(t):
    """Whether reading ``t``'s values on the host costs nothing: CPU tensors.  On any other device a read
    is a host-device synchronisation; the one rule for every value read outside a backend (these checks,
    and the blur reach of ``impls._ops.backend_hp``)."""
    return t.device.type == "cpu"


def _readable(t):
    """Whether ``values`` reads ``t``: CPU data always, other devices only when asked; never meta."""
    return free_to_read(t) or (_DEVICE_VALUES[0] and t.device.type != "meta")


def finite(fn, name, t):
    """No NaN or inf (displacements, positions, sigma)."""
    if t.numel() and not bool(torch.isfinite(t).all()):
        _fail(ValueError, fn, name, "finite values", "NaN or inf")


def positive(fn, name, t):
    finite(fn, name, t)
    if t.numel() and not bool((t > 0).all()):
        _fail(ValueError, fn, name, "values > 0", f"min {float(t.min()):g}")


def values(fn, finite_args=(), positive_args=()):
    """Value checks of ``(name, tensor)`` pairs that must be finite, or finite and positive; a tensor is read
    only where that costs no synchronisation (see the module doc)."""
    for name, t in finite_args:
        if _readable(t):
            finite(fn, name, t)
    for name, t in positive_args:
        if _readable(t):
            positive(fn, name, t)


def radius_from(layer, hp, sigma):
    """``layer``'s default radius (its table's rule, ``ceil(factor * sigma)``) from ``sigma``'s value, read on
    the host (one synchronisation on a device: pass the radius explicitly to avoid it); ``sigma`` is
    checked finite and positive there."""
    s = float(sigma.detach().reshape(()))
    if not (math.isfinite(s) and s > 0):
        _fail(ValueError, layer.function, "sigma", "a finite value > 0", f"{s:g}")
    return layer.param(layer.radius).radius_from(s, hp)


def scalar(fn, name, value, x):
    """A scalar: a 0-d or one-element tensor, or a finite positive Python real (values: see ``values``)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = torch.tensor(real(fn, name, value), dtype=x.dtype, device=x.device)
    tensor(fn, name, value, x)
    if value.dim() > 1 or value.numel() != 1:
        _fail(ValueError, fn, name, "a scalar (0-d or one-element tensor)", f"shape {tuple(value.shape)}")
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


def unit_weights(fn, name, weight, x, groups=1):
    """``weight [F,S/G,K]`` with ``S`` of ``x``, ``G = groups`` and ``F, K >= 1``."""
    tensor(fn, name, weight, x)
    s_ = x.shape[1] // groups
    if weight.dim() != 3 or weight.shape[1] != s_ or weight.shape[0] < 1 or weight.shape[2] < 1:
        what = "S = x.shape[1]" if groups == 1 else f"S/groups = {x.shape[1]}/{groups}"
        _fail(ValueError, fn, name, f"shape [F, {s_}, K] with F, K >= 1 ({what})", f"shape {tuple(weight.shape)}")


def groups_divide(fn, x, groups):
    """``groups`` (nn.Conv2d's channel groups) divides ``S = x.shape[1]``; checked before the weights' shape."""
    if x.shape[1] % groups:
        _fail(ValueError, fn, "groups", f"a divisor of S = x.shape[1] = {x.shape[1]}", groups)


def groups_divide_f(fn, f_, groups, wname="weight"):
    """``groups`` divides ``F``, the weights' first dimension."""
    if f_ % groups:
        _fail(ValueError, fn, "groups", f"a divisor of F = {wname}.shape[0] = {f_}", groups)


def units(fn, x, weight, names_xy, ax, ay, wname="weight", groups=1):
    """``weight [F,S/G,K]`` with ``S`` of ``x`` and ``G`` dividing ``S`` and ``F``, and displacement tensors of the
    same shape."""
    groups_divide(fn, x, groups)
    unit_weights(fn, wname, weight, x, groups)
    groups_divide_f(fn, weight.shape[0], groups, wname)
    for name, t in zip(names_xy, (ax, ay)):
        tensor(fn, name, t, x, weight.shape, f"shape {tuple(weight.shape)} (that of {wname})")


def bias(fn, b, x, f_):
    if b is not None:
        tensor(fn, "bias", b, x, (f_,), f"shape ({f_},) (F of the weights)")


def hparams(layer, hp):
    """The hyper-parameters ``hp`` of ``layer`` checked by its table (``reference.layers``): every one
    given, of its type and within its bounds (a radius may be None: resolved later from ``sigma``,
    ``radius_from``) -> the same dict, in the table's order, ints and floats as Python numbers."""
    fn, out = layer.function, {}
    for p in layer.params:
        v = hp[p.name]
        if p.type is int:
            out[p.name] = integer(fn, p.name, v, p.low, allow_none=p.default is None)
        elif p.type is float:
            out[p.name] = real(fn, p.name, v)
        else:
            out[p.name] = choice(fn, p.name, v, p.choices)
    return out


def check(layer, tensors, hp):
    """Every structure check of ``layer`` (a ``reference.layers.Layer``): hyper-parameters, then the
    tensors' types, shapes, dtypes and devices -> ``(tensors, hp)`` with ``sigma`` as a tensor."""
    hp = hparams(layer, hp)
    t = dict(zip(layer.tensors, tensors))
    _STRUCTURE[layer.name](layer.function, t, hp)
    return tuple(t.values()), hp


def _dau(fn, t, hp):
    x, weight = t["x"], t["weight"]
    input_x(fn, x)
    units(fn, x, weight, ("mu_x", "mu_y"), t["mu_x"], t["mu_y"], groups=hp["groups"])
    t["sigma"] = scalar(fn, "sigma", t["sigma"], x)
    bias(fn, t["bias"], x, weight.shape[0])


def _dau_gauss(fn, t, hp):
    """``sigma`` a scalar or ``[F,S,K]``."""
    x, weight, sigma = t["x"], t["weight"], t["sigma"]
    input_x(fn, x)
    units(fn, x, weight, ("mu_x", "mu_y"), t["mu_x"], t["mu_y"], groups=hp["groups"])
    if isinstance(sigma, torch.Tensor) and sigma.dim() == 3:
        tensor(fn, "sigma", sigma, x, weight.shape, f"a scalar or shape {tuple(weight.shape)} (that of weight)")
    else:
        t["sigma"] = scalar(fn, "sigma", sigma, x)
    bias(fn, t["bias"], x, weight.shape[0])


def _acu(fn, t, hp):
    """Positions ``[K]`` or ``[P,K]`` with ``F`` divisible by ``P``."""
    x, weight, pos_x, pos_y = t["x"], t["weight"], t["pos_x"], t["pos_y"]
    input_x(fn, x)
    unit_weights(fn, "weight", weight, x)
    f_, _, k_ = weight.shape
    for name, p in (("pos_x", pos_x), ("pos_y", pos_y)):
        tensor(fn, name, p, x)
        if p.dim() not in (1, 2) or p.shape[-1] != k_ or (p.dim() == 2 and (p.shape[0] < 1 or f_ % p.shape[0])):
            _fail(
                ValueError, fn, name, f"shape [{k_}] or [P, {k_}] with P dividing F = {f_}", f"shape {tuple(p.shape)}"
            )
    if pos_x.shape != pos_y.shape:
        _fail(ValueError, fn, "pos_y", f"shape {tuple(pos_x.shape)} (that of pos_x)", f"shape {tuple(pos_y.shape)}")
    bias(fn, t["bias"], x, f_)


def _njet(fn, t, hp):
    """``alpha [F,S/G,J]`` with ``J`` of ``order`` and ``G = groups`` dividing ``S`` and ``F``."""
    x, alpha, groups = t["x"], t["alpha"], hp["groups"]
    input_x(fn, x)
    order = hp["order"]
    j_ = (order + 1) * (order + 2) // 2
    tensor(fn, "alpha", alpha, x)
    groups_divide(fn, x, groups)
    s_ = x.shape[1] // groups
    if alpha.dim() != 3 or alpha.shape[1] != s_ or alpha.shape[2] != j_ or alpha.shape[0] < 1:
        what = "S = x.shape[1]" if groups == 1 else f"S/groups = {x.shape[1]}/{groups}"
        _fail(
            ValueError,
            fn,
            "alpha",
            f"shape [F, {s_}, {j_}] ({what}, J for order {order})",
            f"shape {tuple(alpha.shape)}",
        )
    groups_divide_f(fn, alpha.shape[0], groups, "alpha")
    t["sigma"] = scalar(fn, "sigma", t["sigma"], x)
    bias(fn, t["bias"], x, alpha.shape[0])


_STRUCTURE = {"dau": _dau, "dau_gauss": _dau_gauss, "acu": _acu, "njet": _njet}
