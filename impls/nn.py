"""Trainable layers over the functional API, and the papers' training helpers (``rfbench.nn``).

Modules (drop-in for ``nn.Conv2d`` in shape: ``Ho = ceil(H / stride)``, "same" at stride 1; the
contract's sections are those of reference/README.md):

- ``DAUConv2d``       DAU, efficient form (contract section 2): ``weight, mu_x, mu_y [F,S,K]``, one ``sigma``.
- ``DAUGaussConv2d``  DAU with per-unit Gaussian kernels (contract section 3): ``sigma [F,S,K]``, fixed radius.
- ``ACUConv2d``       active convolution (contract section 4): ``weight [F,S,K]``, ``pos_x, pos_y [K]`` or ``[P,K]``.
- ``NJetConv2d``      Gaussian-derivative basis, learned scale (contract section 5): ``alpha [F,S,J]``, one ``sigma``.

``DAUConv2d``, ``DAUGaussConv2d`` and ``NJetConv2d`` take ``groups`` (channel groups, as ``nn.Conv2d``'s:
dividing ``in_channels`` and ``out_channels``; their weights are then ``[F, S/groups, ...]``; ``groups =
in_channels = out_channels`` is depthwise).  ``ACUConv2d``'s ``position_groups`` are another thing: groups of
output channels sharing one set of positions.

Arguments after the two channel counts are keyword-only (``DAUConv2d(3, 16, units=3)``): a third
number would read as ``nn.Conv2d``'s kernel size, which these layers learn instead.  ``learn_sigma``
defaults follow each paper: ``DAUConv2d`` False (DAU IJCV learns weights and displacements with one
fixed sigma, 0.5, shared by every unit: the blur that makes the efficient form cheap), ``DAUGaussConv2d``
and ``NJetConv2d`` True (a learned per-unit scale, and the N-Jet paper's learned scale, are what those
layers are for).  The repr names the backend ``"auto"`` picks for the parameters' device and dtype.

Every scale is stored as ``log_sigma`` (``sigma = exp(log_sigma)``, so it stays positive
whatever the optimiser does); it is a Parameter when learned and a buffer otherwise, so the
state_dict keys do not depend on ``learn_sigma``.

Helpers (small functions, composable with any optimiser):

- ``normalize_position_grads``: the ACU normalised position gradient (ACU Eq. 15-16), applied to the
  update: call it after ``backward()`` (every accumulated one), ``scaler.unscale_(optimizer)`` and DDP's
  all-reduce, and before ``optimizer.step()``. ``normalized_grad`` is the transform itself;
  ``zero_center`` zeroes one synapse of a gradient.
- ``freeze_positions``, ``PositionWarmup``: ACU warm-up with frozen positions.
- ``param_groups``: optimiser groups with a displacement learning-rate factor, no weight decay
  on displacements and scales.
- ``safe_subsample``: N-Jet safe subsampling (reference/README.md section 5).
- ``prune_units``, ``shrink_units``: DAU unit pruning by relative weight (DAU IJCV Table 2).
"""

import math

import torch
import torch.nn.functional as tnf
from torch import nn

from . import _validate, acu_conv2d, dau_conv2d, dau_gauss_conv2d, njet_conv2d
from ._math import n_basis

__all__ = [
    "ACUConv2d",
    "DAUConv2d",
    "DAUGaussConv2d",
    "NJetConv2d",
    "PositionWarmup",
    "freeze_positions",
    "normalize_position_grads",
    "normalized_grad",
    "param_groups",
    "prune_units",
    "safe_subsample",
    "shrink_units",
    "zero_center",
]

MU_RANGE = 1.5  # DAU IJCV section 5.2: displacements initialised uniformly in [-1.5, 1.5]


# ---------------------------------------------------------------- initialisation


def glorot_(w):
    """Glorot-uniform fill of unit weights ``w [F,S,K]`` (fan_in ``S K``, fan_out ``F K``), in place."""
    f_, s_, k_ = w.shape
    bound = math.sqrt(6.0 / (s_ * k_ + f_ * k_))
    with torch.no_grad():
        return w.uniform_(-bound, bound)


def grid_offsets(k, half=MU_RANGE):
    """``k`` points row-major on the smallest near-square grid spanning ``[-half, half]``. -> ``(x, y)`` lists.

    ``cols = ceil(sqrt(k))``, ``rows = ceil(k / cols)``; a single row or column sits at 0.
    """
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)

    def line(n):
        return [0.0] if n == 1 else [-half + 2 * half * i / (n - 1) for i in range(n)]

    pts = [(u, t) for t in line(rows) for u in line(cols)][:k]
    return [p[0] for p in pts], [p[1] for p in pts]


def init_mu_(mu_x, mu_y, mode):
    """DAU displacements ``[F,S,K]``: ``"uniform"`` in ``[-1.5, 1.5]`` (IJCV 5.2) or ``"grid"`` (same grid for
    every ``(f, s)``, see ``grid_offsets``), in place."""
    with torch.no_grad():
        if mode == "uniform":
            mu_x.uniform_(-MU_RANGE, MU_RANGE)
            mu_y.uniform_(-MU_RANGE, MU_RANGE)
        else:
            gx, gy = grid_offsets(mu_x.shape[-1])
            mu_x.copy_(torch.tensor(gx, dtype=mu_x.dtype).expand(mu_x.shape))
            mu_y.copy_(torch.tensor(gy, dtype=mu_y.dtype).expand(mu_y.shape))


def acu_offsets(k, init):
    """Initial ACU synapse positions -> ``(x, y, center)``; ``center`` is the index of the synapse at ``(0, 0)``.

    ``"grid3x3"``: the nine points ``{-1,0,1}^2`` row-major (a 3x3 convolution with ``weight`` reshaped
    row-major, contract section 4), centre index 4. ``"circle"``: the centre first, then ``k - 1`` points on the
    unit circle at angles ``2 pi i / (k - 1)`` starting at ``+x``; centre index 0.
    """
    if init == "grid3x3":
        if k != 9:
            raise ValueError(
                f"argument 'synapses' expected 9 for init='grid3x3' (the 3x3 grid), got {k}; for {k} synapses "
                f"use init='circle' (the centre and {k - 1} point(s) on the unit circle)"
            )
        return [float(u) for t in (-1, 0, 1) for u in (-1, 0, 1)], [float(t) for t in (-1, 0, 1) for u in (-1, 0, 1)], 4
    ang = [2 * math.pi * i / (k - 1) for i in range(k - 1)]
    return [0.0] + [math.cos(a) for a in ang], [0.0] + [math.sin(a) for a in ang], 0


def _scale(module, value, shape, learn, kw):
    """Register ``log_sigma`` (Parameter if ``learn`` else buffer) of ``shape``, filled with ``log(value)``."""
    t = torch.full(shape, math.log(value), **kw)
    if learn:
        module.log_sigma = nn.Parameter(t)
    else:
        module.register_buffer("log_sigma", t)


def _bias(module, flag, f_, kw):
    if flag:
        module.bias = nn.Parameter(torch.empty(f_, **kw))
    else:
        module.register_parameter("bias", None)


# ---------------------------------------------------------------- modules


def _value(t):
    """A one-element tensor for ``extra_repr``: its value, or ``"?"`` where there is none to read (meta, fake)."""
    if t.device.type == "meta" or isinstance(t, torch._subclasses.FakeTensor):
        return "?"
    return f"{float(t.detach()):.4g}"


class _Layer(nn.Module):
    """What the four modules share: validated channel counts, stride and backend (``_common``), ``sigma`` from
    ``log_sigma``, and ``extra_repr`` listing the attributes named in ``_shown``."""

    _shown = ()
    _layer = ""  # the contract's layer name (reference/layers.py), for the backend "auto" picks
    _third = ""  # the argument a third positional number would be mistaken for

    def __prepare_scriptable__(self):
        """``torch.jit.script`` calls this first (on every submodule): refused, the forward is Python the
        TorchScript compiler cannot read."""
        raise RuntimeError(
            f"{type(self).__name__}: torch.jit.script is not supported (TorchScript cannot compile the layers' "
            "Python); use torch.compile(model) or torch.export.export(model, args) (both see each layer as one "
            "custom operator), or torch.jit.trace(model, args)"
        )

    def _common(self, in_channels, out_channels, stride, backend, positional=(), **ints):
        """Validate and store the channel counts, ``stride``, ``backend`` and each of ``ints`` (name -> value,
        an int >= 1, or None where the name ends in ``radius``: a radius may be 0 or left to sigma).  Channel
        ``groups``, where given, must divide both channel counts.  ``positional``: arguments given after the
        two channel counts, refused (they are keyword-only)."""
        name = type(self).__name__
        if positional:
            shown = ", ".join(repr(v) for v in (in_channels, out_channels, *positional))
            raise TypeError(
                f"{name}({shown}): arguments after in_channels and out_channels are keyword-only; name them, "
                f"e.g. {name}({in_channels!r}, {out_channels!r}, {self._third}={positional[0]!r}) "
                f"({self._third} is not nn.Conv2d's kernel_size: the receptive field is learned)"
            )
        for key, val in dict(in_channels=in_channels, out_channels=out_channels, stride=stride, **ints).items():
            low, none = (0, True) if key.endswith("radius") else (1, False)
            setattr(self, key, _validate.integer(name, key, val, low, allow_none=none))
        for key in ("in_channels", "out_channels"):
            if "groups" in ints and getattr(self, key) % self.groups:
                raise ValueError(
                    f"{name}: argument 'groups' expected a divisor of {key} = {getattr(self, key)}, got {self.groups}"
                )
        self.backend = backend

    def _real(self, key, value):
        return _validate.real(type(self).__name__, key, value)

    def _choice(self, key, value, options):
        return _validate.choice(type(self).__name__, key, value, options)

    @property
    def sigma(self):
        return self.log_sigma.exp()

    @property
    def learn_sigma(self):
        return isinstance(self.log_sigma, nn.Parameter)

    def _check_input(self, x):
        """A wrong input blames the input: ``x`` must be ``[N, in_channels, H, W]``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            got = f"{x.dim()}-d input" if x.dim() != 4 else f"{x.shape[1]} channels"
            raise ValueError(
                f"{type(self).__name__}: input x expected shape [N, {self.in_channels}, H, W] "
                f"(in_channels={self.in_channels}), got x of shape {tuple(x.shape)} ({got})"
            )

    def resolved_backend(self):
        """The backend this module runs on its parameters' device and dtype: ``backend`` itself, or the
        one ``"auto"`` picks (``impls._registry.resolve``), or why none can."""
        from . import _registry

        p = next(self.parameters(), None)
        if p is None or p.device.type == "meta":
            return None
        try:
            return _registry.resolve(self.backend, self._layer, p.device, p.dtype)
        except _registry.BackendUnavailable as exc:
            return f"none: {exc}"

    def extra_repr(self):
        def show(key):
            if key == "bias":
                return self.bias is not None
            if key == "sigma":
                return _value(self.sigma)
            val = getattr(self, key)
            if key == "backend" and val == "auto":
                picked = self.resolved_backend()
                return repr(val) + (f" -> {picked}" if picked else "")
            return f"{val:g}" if isinstance(val, float) else repr(val)

        shown = [k for k in self._shown if k != "groups" or self.groups != 1]  # groups shown when not 1
        return ", ".join([f"{self.in_channels}, {self.out_channels}"] + [f"{k}={show(k)}" for k in shown])


class DAUConv2d(_Layer):
    """DAU convolution, efficient form (reference/README.md section 2; DAU IJCV Eq. 13-14).

    ``x [N, S, H, W]`` -> ``[N, F, ceil(H/stride), ceil(W/stride)]``.

    Parameters (``S = in_channels / groups``): ``weight [F,S,K]`` (Glorot), ``mu_x, mu_y [F,S,K]`` (pixels;
    ``mu_init="uniform"`` in ``[-1.5, 1.5]``, IJCV 5.2, or ``"grid"``), ``log_sigma`` 0-d
    (``sigma = exp(log_sigma)``; a Parameter only if ``learn_sigma``), ``bias [F]`` (zeros). Buffer
    ``unit_mask [F,S,K]`` (bool): units cleared by ``prune_units`` read weight 0. ``blur_radius`` None means
    ``ceil(3 sigma)`` of the current sigma.

    Example:
        >>> import torch, rfbench
        >>> layer = rfbench.nn.DAUConv2d(8, 16, units=2, sigma=0.5)
        >>> layer(torch.randn(4, 8, 32, 32)).shape
        torch.Size([4, 16, 32, 32])
    """

    _shown = ("units", "sigma", "stride", "groups", "bias", "mu_grad", "learn_sigma", "backend")
    _layer, _third = "dau", "units"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *positional: object,
        units: int = 2,
        sigma: float = 0.5,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
        mu_init: str = "uniform",
        mu_grad: str = "exact",
        learn_sigma: bool = False,
        blur_radius: int | None = None,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self._common(
            in_channels, out_channels, stride, backend, positional, units=units, blur_radius=blur_radius, groups=groups
        )
        self.init_sigma = self._real("sigma", sigma)
        self.mu_init = self._choice("mu_init", mu_init, ("uniform", "grid"))
        self.mu_grad = self._choice("mu_grad", mu_grad, ("exact", "gauss"))
        _units(self, (out_channels, in_channels // self.groups, units), (), learn_sigma, bias, kw)

    def reset_parameters(self):
        glorot_(self.weight)
        init_mu_(self.mu_x, self.mu_y, self.mu_init)
        with torch.no_grad():
            self.log_sigma.fill_(math.log(self.init_sigma))
            self.unit_mask.fill_(True)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        w = torch.where(self.unit_mask, self.weight, 0)
        return dau_conv2d(
            x, w, self.mu_x, self.mu_y, self.sigma, self.bias, stride=self.stride, blur_radius=self.blur_radius,
            mu_grad=self.mu_grad, groups=self.groups, backend=self.backend,
        )  # fmt: skip


def _units(m, shape, sigma_shape, learn_sigma, bias, kw):
    """DAU parameters of ``m``: ``weight, mu_x, mu_y`` of ``shape``, ``log_sigma``, ``bias``, ``unit_mask``."""
    for name in ("weight", "mu_x", "mu_y"):
        setattr(m, name, nn.Parameter(torch.empty(shape, **kw)))
    _scale(m, m.init_sigma, sigma_shape, learn_sigma, kw)
    _bias(m, bias, shape[0], kw)
    m.register_buffer("unit_mask", torch.ones(shape, dtype=torch.bool, device=kw["device"]))
    m.reset_parameters()


class DAUGaussConv2d(_Layer):
    """DAU with one Gaussian kernel per unit (reference/README.md section 3; DAU IJCV Eq. 2-4).

    ``x [N, S, H, W]`` -> ``[N, F, ceil(H/stride), ceil(W/stride)]``; kernels of side ``2 radius + 1``.

    Parameters: ``weight, mu_x, mu_y [F,S,K]`` as ``DAUConv2d``; ``log_sigma [F,S,K]`` (per-unit
    ``sigma = exp(log_sigma)``; a Parameter if ``learn_sigma``); ``bias [F]``. ``radius`` is fixed at
    construction: default ``ceil(1.5 + 3 sigma)`` (the initial displacement range plus 3 sigma).

    Example:
        >>> import torch, rfbench
        >>> layer = rfbench.nn.DAUGaussConv2d(3, 8, units=2, sigma=0.6, stride=2)
        >>> layer(torch.randn(2, 3, 15, 15)).shape
        torch.Size([2, 8, 8, 8])
    """

    _shown = ("units", "radius", "init_sigma", "stride", "groups", "bias", "learn_sigma", "backend")
    _layer, _third = "dau_gauss", "units"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *positional: object,
        units: int = 2,
        sigma: float = 0.5,
        radius: int | None = None,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
        mu_init: str = "uniform",
        learn_sigma: bool = True,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self._common(in_channels, out_channels, stride, backend, positional, units=units, radius=radius, groups=groups)
        self.init_sigma = self._real("sigma", sigma)
        if self.radius is None:
            self.radius = math.ceil(MU_RANGE + 3 * self.init_sigma)
        self.mu_init = self._choice("mu_init", mu_init, ("uniform", "grid"))
        shape = (out_channels, in_channels // self.groups, units)
        _units(self, shape, shape, learn_sigma, bias, kw)

    reset_parameters = DAUConv2d.reset_parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        w = torch.where(self.unit_mask, self.weight, 0)
        return dau_gauss_conv2d(
            x, w, self.mu_x, self.mu_y, self.sigma, self.bias, radius=self.radius, stride=self.stride,
            groups=self.groups, backend=self.backend,
        )  # fmt: skip


class ACUConv2d(_Layer):
    """Active convolution unit (reference/README.md section 4; ACU Eq. 3-5).

    ``x [N, S, H, W]`` -> ``[N, F, ceil(H/stride), ceil(W/stride)]``.

    Parameters: ``weight [F,S,K]`` (uniform ``+-1/sqrt(S K)`` as ``nn.Conv2d``), ``pos_x, pos_y`` ``[K]``
    (``position_groups=1``) or ``[P,K]`` (see ``acu_offsets`` for ``init``), ``bias [F]`` (as ``nn.Conv2d``).

    Training (ACU sections 2.5-2.7). ``normalize_grad``: the update uses the normalised position gradient
    (ACU Eq. 15-16: each synapse's ``(gx, gy)`` divided by its norm, ``normalized_grad``), which
    ``normalize_position_grads(model)`` applies to ``pos_x.grad, pos_y.grad`` once the gradient of the whole
    update is there: after every accumulated ``backward()``, ``scaler.unscale_(optimizer)`` and DDP's
    all-reduce, before ``optimizer.step()``. An optimiser step on position gradients that were not
    normalised is caught at the next forward (``RuntimeError``); ``normalize_grad=False`` gives the plain
    gradient. ``fixed_center`` keeps synapse ``self.center`` (the one at ``(0, 0)``: index 4 of the 3x3
    grid, 0 of the circle) where it is: the forward reads it detached, so its gradient is zero.

    Example:
        >>> import torch, rfbench
        >>> layer = rfbench.nn.ACUConv2d(8, 16, synapses=9, init="grid3x3")
        >>> layer(torch.randn(4, 8, 32, 32)).shape
        torch.Size([4, 16, 32, 32])
    """

    _shown = ("synapses", "init", "fixed_center", "position_groups", "stride", "bias", "normalize_grad", "backend")
    _layer, _third = "acu", "synapses"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *positional: object,
        synapses: int = 9,
        init: str = "grid3x3",
        fixed_center: bool = True,
        position_groups: int = 1,
        stride: int = 1,
        bias: bool = True,
        normalize_grad: bool = True,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self._common(
            in_channels, out_channels, stride, backend, positional, synapses=synapses, position_groups=position_groups
        )
        self.init = self._choice("init", init, ("grid3x3", "circle"))
        if out_channels % position_groups:
            raise ValueError(
                f"argument 'position_groups' expected a divisor of out_channels={out_channels}, got {position_groups}"
            )
        self.fixed_center = bool(fixed_center)
        self.normalize_grad = bool(normalize_grad)
        self.center = acu_offsets(synapses, init)[2]
        pshape = (synapses,) if position_groups == 1 else (position_groups, synapses)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, synapses, **kw))
        self.pos_x = nn.Parameter(torch.empty(pshape, **kw))
        self.pos_y = nn.Parameter(torch.empty(pshape, **kw))
        _bias(self, bias, out_channels, kw)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.in_channels * self.synapses)
        gx, gy, _ = acu_offsets(self.synapses, self.init)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)
            self.pos_x.copy_(torch.tensor(gx, dtype=self.pos_x.dtype).expand(self.pos_x.shape))
            self.pos_y.copy_(torch.tensor(gy, dtype=self.pos_y.dtype).expand(self.pos_y.shape))
        self._raw = False  # no gradient of these positions is waiting for normalize_position_grads

    def positions(self):
        """``(pos_x, pos_y)`` as the forward reads them: the fixed centre detached (no gradient), and, when a
        backward may follow, a hook that records it (``normalize_position_grads``)."""
        px, py = self.pos_x, self.pos_y
        if self.fixed_center:
            keep = torch.arange(self.synapses, device=px.device) == self.center
            px, py = torch.where(keep, px.detach(), px), torch.where(keep, py.detach(), py)
        if self.normalize_grad and torch.is_grad_enabled() and self.pos_x.requires_grad and not _tracing():
            self._seen = self.pos_x._version
            px = px.view_as(px)
            px.register_hook(self._backward_seen)
        return px, py

    def _backward_seen(self, g):
        self._raw = True  # pos_x.grad now holds a gradient that normalize_position_grads has not seen

    def _check_normalised(self):
        """Refuse a forward after an optimiser changed the positions with gradients that were not normalised."""
        if getattr(self, "_raw", False) and self.pos_x._version != self._seen:
            self._raw = False
            raise RuntimeError(
                f"{type(self).__name__}: the positions were updated with gradients that were not normalised; "
                "call rfbench.nn.normalize_position_grads(model) after backward() (and scaler.unscale_ / DDP's "
                "all-reduce) and before optimizer.step(), or construct the layer with normalize_grad=False "
                "for the plain gradient"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if not _tracing():
            self._check_normalised()
        px, py = self.positions()
        return acu_conv2d(x, self.weight, px, py, self.bias, stride=self.stride, backend=self.backend)


def _tracing():
    """Inside torch.compile / torch.export / torch.jit tracing: no Python-side bookkeeping there."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


class NJetConv2d(_Layer):
    """N-Jet: Gaussian-derivative basis up to ``order`` with a learned scale (reference/README.md section 5).

    ``x [N, S, H, W]`` -> ``[N, F, ceil(H/stride), ceil(W/stride)]``.

    Parameters: ``alpha [F,S,J]`` (``S = in_channels / groups``), ``J = (order+1)(order+2)/2``, normal with
    std ``sqrt(2 / (S J))`` (fan-in scaled); ``log_sigma`` 0-d (``sigma = exp(log_sigma)``, initially
    ``sigma``; a Parameter if ``learn_sigma``); ``bias [F]`` (zeros). ``radius`` None means
    ``ceil(extent sigma)`` of the current sigma.

    Example:
        >>> import torch, rfbench
        >>> layer = rfbench.nn.NJetConv2d(8, 16, order=2, sigma=1.0)
        >>> layer(torch.randn(4, 8, 32, 32)).shape
        torch.Size([4, 16, 32, 32])
    """

    _shown = ("order", "sigma", "extent", "stride", "groups", "bias", "learn_sigma", "backend")
    _layer, _third = "njet", "order"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *positional: object,
        order: int = 2,
        sigma: float = 1.0,
        extent: float = 2.0,
        learn_sigma: bool = True,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
        radius: int | None = None,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self._common(in_channels, out_channels, stride, backend, positional, radius=radius, groups=groups)
        self.order = _validate.integer(type(self).__name__, "order", order, 0)
        self.init_sigma = self._real("sigma", sigma)
        self.extent = self._real("extent", extent)
        self.alpha = nn.Parameter(torch.empty(out_channels, in_channels // self.groups, n_basis(order), **kw))
        _scale(self, self.init_sigma, (), learn_sigma, kw)
        _bias(self, bias, out_channels, kw)
        self.reset_parameters()

    def reset_parameters(self):
        with torch.no_grad():
            self.alpha.normal_(0.0, math.sqrt(2.0 / (self.alpha.shape[1] * self.alpha.shape[2])))
            self.log_sigma.fill_(math.log(self.init_sigma))
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return njet_conv2d(
            x, self.alpha, self.sigma, self.bias, order=self.order, extent=self.extent, radius=self.radius,
            stride=self.stride, groups=self.groups, backend=self.backend,
        )  # fmt: skip


# ---------------------------------------------------------------- ACU training helpers


def normalized_grad(g):
    """ACU normalised position gradient (ACU Eq. 15-16), per synapse: ``g / sqrt(gx^2 + gy^2)``.

    ``g [2, ...]``: ``g[0]`` the x gradient, ``g[1]`` the y gradient. A synapse whose gradient is zero
    keeps a zero gradient. -> same shape.
    """
    norm = torch.hypot(g[0], g[1])  # hypot: no underflow for tiny gradients
    return torch.where(norm > 0, g / torch.where(norm > 0, norm, 1), 0)


def zero_center(g, index):
    """Zero the gradient of synapse ``index`` (last axis) of ``g [..., K]``: the fixed centre. -> same shape."""
    keep = torch.ones(g.shape[-1], dtype=torch.bool, device=g.device)
    keep[index] = False
    return torch.where(keep, g, 0)


def normalize_position_grads(model: nn.Module) -> int:
    """Apply the ACU normalised position gradient (ACU Eq. 15-16) to every ``ACUConv2d`` of ``model``
    (or ``model`` itself) built with ``normalize_grad=True``.

    Jeon and Kim (Active Convolution, CVPR 2017, Eq. 15-16) update each synapse ``k`` by the direction of
    its position gradient only, ``(gx_k, gy_k) / sqrt(gx_k^2 + gy_k^2)`` (a zero gradient stays zero), so
    the learning rate sets how far a synapse moves; their Caffe layer (``applyConstraint2`` in
    ``aconv_fast_layer.cu``, github.com/jyh2986/Active-Convolution) does the same per synapse. The
    gradient meant is the one of the update's loss, so call this once per optimiser step, when
    ``pos_x.grad, pos_y.grad`` hold it: after the last accumulated ``backward()``, after
    ``scaler.unscale_(optimizer)`` with AMP, after DDP's all-reduce (which ``backward()`` ends with), and
    before ``optimizer.step()``. Normalising a sum of half-batch gradients, an unscaled gradient or the
    ranks' average gives the single-process, full-batch result; normalising each backward's share would
    not. Applying it twice changes nothing but rounding.

    In place on ``.grad``; layers whose positions have no gradient (frozen) are skipped.
    -> number of layers normalised.
    """
    done = 0
    for m in _acu_layers(model):
        gx, gy = m.pos_x.grad, m.pos_y.grad
        m._raw = False
        if not m.normalize_grad or gx is None or gy is None:
            continue
        with torch.no_grad():
            g = normalized_grad(torch.stack((gx, gy)))
            gx.copy_(g[0])
            gy.copy_(g[1])
        done += 1
    return done


def _acu_layers(model):
    return [m for m in model.modules() if isinstance(m, ACUConv2d)]


def freeze_positions(model, frozen=True):
    """Freeze (or release) the positions of every ACU layer of ``model``: toggles ``requires_grad`` and
    drops stale gradients, so optimisers skip them (no momentum or weight-decay step either)."""
    for m in _acu_layers(model):
        for p in (m.pos_x, m.pos_y):
            p.requires_grad_(not frozen)
            if frozen:
                p.grad = None


class PositionWarmup:
    """ACU warm-up: positions frozen for the first ``steps`` optimiser steps, then learned.

    Call ``step()`` after each ``optimizer.step()``. ``frozen`` tells the current state.
    """

    def __init__(self, model, steps):
        self.model, self.steps, self.count = model, _validate.integer(type(self).__name__, "steps", steps, 0), 0
        self._apply()

    @property
    def frozen(self):
        return self.count < self.steps

    def _apply(self):
        freeze_positions(self.model, self.frozen)

    def step(self):
        self.count += 1
        if self.count == self.steps:
            self._apply()


# ---------------------------------------------------------------- optimiser groups


def param_groups(model, lr, mu_lr_factor=1.0, weight_decay=0.0):
    """Optimiser parameter groups for a model holding DAU / ACU / N-Jet layers.

    - ``"displacements"``: DAU ``mu_x, mu_y`` and ACU ``pos_x, pos_y``; ``lr * mu_lr_factor``, no weight decay.
    - ``"scales"``: every ``log_sigma`` that is a Parameter; ``lr``, no weight decay.
    - ``"weights"``: all other parameters; ``lr``, ``weight_decay``.

    Empty groups are left out. -> list of dicts for ``torch.optim`` (the extra ``"name"`` key is kept).
    """
    disp, scales = [], []
    for m in model.modules():
        if isinstance(m, (DAUConv2d, DAUGaussConv2d)):
            disp += [m.mu_x, m.mu_y]
        elif isinstance(m, ACUConv2d):
            disp += [m.pos_x, m.pos_y]
        if isinstance(getattr(m, "log_sigma", None), nn.Parameter):
            scales.append(m.log_sigma)
    taken = {id(p) for p in disp + scales}
    rest = [p for p in model.parameters() if id(p) not in taken]
    groups = [
        {"name": "weights", "params": rest, "lr": lr, "weight_decay": weight_decay},
        {"name": "displacements", "params": disp, "lr": lr * mu_lr_factor, "weight_decay": 0.0},
        {"name": "scales", "params": scales, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


# ---------------------------------------------------------------- N-Jet


def safe_subsample(y, sigma, r=4):
    """N-Jet safe subsampling (N-Jet section IV; reference/README.md section 5).

    ``y [N, C, H, W]`` -> ``[N, C, h, w]`` with ``h = max(1, round(H * 2^(-sigma / r)))`` (likewise ``w``),
    bilinear, ``align_corners=False``. ``sigma``: float or one-element tensor (its value only; no gradient
    flows through a size). ``round`` is Python's (ties to even).
    """
    r = _validate.real("safe_subsample", "r", r)
    sigma = sigma.detach() if isinstance(sigma, torch.Tensor) else sigma
    f = 2.0 ** (-float(sigma) / r)
    size = tuple(max(1, round(n * f)) for n in y.shape[-2:])
    return tnf.interpolate(y, size=size, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- DAU pruning


def _dau_layers(model):
    return [m for m in model.modules() if isinstance(m, (DAUConv2d, DAUGaussConv2d))]


def prune_units(model, threshold, shrink=False):
    """Remove DAU units with small weights (DAU IJCV Table 2), per layer.

    In each DAU layer of ``model`` (or ``model`` itself), a live unit ``(f, s, k)`` is removed when
    ``|weight| < threshold * max |weight|`` over the layer's live units. Removal zeroes its weight and clears
    ``unit_mask``; the forward reads masked weights, so a removed unit gets no gradient and stays removed.
    With ``shrink=True`` the layers are then passed to ``shrink_units`` (rebuild the optimiser after it).
    -> number of units removed by this call (entries of ``[F,S,K]``).
    """
    removed = 0
    for m in _dau_layers(model):
        with torch.no_grad():
            mag = torch.where(m.unit_mask, m.weight.abs(), 0)
            drop = m.unit_mask & (mag < threshold * mag.max())
            m.unit_mask &= ~drop
            m.weight.masked_fill_(drop, 0)
        removed += int(drop.sum())
        if shrink:
            shrink_units(m)
    return removed


def shrink_units(layer):
    """Drop unit slots ``k`` removed for every ``(f, s)`` from a DAU layer: ``K`` shrinks (at least 1 slot kept).

    Parameters and ``unit_mask`` are replaced by new, smaller tensors (same ``requires_grad``), so existing
    optimisers no longer hold them. -> number of slots dropped.
    """
    keep = layer.unit_mask.any(dim=(0, 1))
    if bool(keep.all()):
        return 0
    if not bool(keep.any()):
        keep[0] = True
    for name in ("weight", "mu_x", "mu_y", "log_sigma"):
        t = getattr(layer, name)
        if t.dim() != 3:
            continue
        new = t.detach()[:, :, keep].clone()
        if isinstance(t, nn.Parameter):
            setattr(layer, name, nn.Parameter(new, requires_grad=t.requires_grad))
        else:
            setattr(layer, name, new)
    layer.unit_mask = layer.unit_mask[:, :, keep].clone()
    dropped = layer.units - int(keep.sum())
    layer.units = int(keep.sum())
    return dropped
