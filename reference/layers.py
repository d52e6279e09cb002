"""The layers of the contract, one record each: the one home of a layer's facts.

A ``Layer`` holds what every part of rfbench needs to know about one layer of reference/README.md:
its public function's name and its section of the contract, its tensor arguments in call order
(``x`` first, the optional ``bias`` last), its hyper-parameters (``Param``: type, default, bounds,
and for a radius left ``None`` the rule that derives it from ``sigma``), which tensors must hold
finite or positive values (section 7), and its float64 forward and analytic backward in this
folder (built on SciPy; with the same forward in NumPy alone, its cross-check).  The public API
and its argument checks, the custom operators and the backend interface
(``impls._ops``), the backend registry, the CLI, the test cases and the correctness runner read
it from here; a signature that restates it for readers (the public functions, the reference's
own functions) is checked against it by ``suites/test_layers.py``.

This module imports only the standard library: the CLI and the registry read the table without
loading NumPy or SciPy.  ``Layer.forward`` and ``Layer.backward`` import the layer's code when first
used.
"""

import importlib
import math
from dataclasses import dataclass


class _Required:
    """The default of a hyper-parameter that has none: the caller must give it."""

    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class Param:
    """One hyper-parameter of a layer (a keyword-only argument of the public function).

    ``type``: ``int``, ``float`` or ``str``.  ``low``: an ``int`` must be ``>= low``; a ``float``
    must be finite and ``> 0``.  ``choices``: the values a ``str`` may take.  ``factor``: for a
    radius whose default is ``None``, the rule ``ceil(factor * sigma)``, with ``factor`` a number
    or the name of the hyper-parameter that holds it.  ``forward``: False for a parameter only the
    backward reads (``mu_grad``).
    """

    name: str
    type: type
    default: object = REQUIRED
    low: int = 0
    choices: tuple = ()
    factor: object = None
    forward: bool = True

    @property
    def schema(self):
        """The type in a ``torch.library`` schema: ``int``, ``int?`` (may be None), ``float``, ``str``."""
        return self.type.__name__ + ("?" if self.default is None else "")

    def radius_from(self, sigma, hp):
        """The default radius ``ceil(factor * sigma)`` for the scale ``sigma`` (a Python float) and the
        other hyper-parameters ``hp`` (which hold the factor when it is named)."""
        factor = hp[self.factor] if isinstance(self.factor, str) else self.factor
        return int(math.ceil(factor * sigma))


@dataclass(frozen=True)
class Layer:
    """One layer of the contract (see the module doc)."""

    name: str
    function: str  # the public function, ``impls.<function>``
    section: int  # of reference/README.md
    tensors: tuple  # tensor arguments in call order: x first, the optional bias last
    params: tuple  # hyper-parameters (``Param``), in the order of the public signature
    radius: str = None  # the hyper-parameter that is the layer's Gaussian radius (taps -r..r), if any
    finite: tuple = ()  # tensors whose values must be finite (section 7)
    positive: tuple = ()  # tensors whose values must be finite and > 0 (section 7)
    reference: tuple = ()  # (module of this folder, forward, backward, forward in NumPy alone)

    def param(self, name):
        """The ``Param`` called ``name``."""
        return next(p for p in self.params if p.name == name)

    def defaults(self):
        """The hyper-parameters that have a default -> ``{name: default}``."""
        return {p.name: p.default for p in self.params if p.default is not REQUIRED}

    def forward_params(self, hp):
        """The hyper-parameters of ``hp`` that the forward takes (``Param.forward``)."""
        return {p.name: hp[p.name] for p in self.params if p.forward and p.name in hp}

    def _function(self, i):
        module = importlib.import_module(f"{__package__}.{self.reference[0]}")
        return getattr(module, self.reference[i])

    @property
    def forward(self):
        """The float64 forward: ``forward(*tensors as arrays, **forward hyper-parameters, absolute=False)``."""
        return self._function(1)

    @property
    def forward_numpy(self):
        """The same forward written with NumPy alone: the SciPy forward's cross-check, not the truth."""
        return self._function(3)

    @property
    def backward(self):
        """The analytic backward: ``backward(*tensors, dy, **hyper-parameters, absolute=False)`` -> gradients
        by name."""
        return self._function(2)


STRIDE = Param("stride", int, 1, low=1)
# Channel groups, as nn.Conv2d's ``groups``: G divides S and F, weights ``[F, S/G, ...]``, output channel f reads
# the input channels of its group ``f // (F/G)`` only (reference/README.md section 6).  Not ACU's position groups.
GROUPS = Param("groups", int, 1, low=1)

LAYERS = {
    layer.name: layer
    for layer in (
        Layer(
            "dau",
            "dau_conv2d",
            2,
            ("x", "weight", "mu_x", "mu_y", "sigma", "bias"),
            (
                STRIDE,
                Param("blur_radius", int, None, low=0, factor=3.0),
                Param("mu_grad", str, "exact", choices=("exact", "gauss"), forward=False),
                GROUPS,
            ),
            radius="blur_radius",
            finite=("mu_x", "mu_y"),
            positive=("sigma",),
            reference=("dau", "forward", "backward", "forward_numpy"),
        ),
        Layer(
            "dau_gauss",
            "dau_gauss_conv2d",
            3,
            ("x", "weight", "mu_x", "mu_y", "sigma", "bias"),
            (Param("radius", int, low=0), STRIDE, GROUPS),
            radius="radius",
            finite=("mu_x", "mu_y"),
            positive=("sigma",),
            reference=("dau", "gauss_forward", "gauss_backward", "gauss_forward_numpy"),
        ),
        Layer(
            "acu",
            "acu_conv2d",
            4,
            ("x", "weight", "pos_x", "pos_y", "bias"),
            (STRIDE,),
            finite=("pos_x", "pos_y"),
            reference=("acu", "forward", "backward", "forward_numpy"),
        ),
        Layer(
            "njet",
            "njet_conv2d",
            5,
            ("x", "alpha", "sigma", "bias"),
            (
                Param("order", int, low=0),
                Param("extent", float, 2.0),
                Param("radius", int, None, low=0, factor="extent"),
                STRIDE,
                GROUPS,
            ),
            radius="radius",
            positive=("sigma",),
            reference=("njet", "forward", "backward", "forward_numpy"),
        ),
    )
}
