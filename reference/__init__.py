"""SciPy/NumPy float64 reference of every layer of reference/README.md: the ground truth of rfbench.

``LAYERS[name]`` gives the forward (built on SciPy: ``scipy.ndimage`` blurs and samples,
``scipy.signal`` correlates, ``scipy.special`` evaluates the Hermite polynomials; see
``reference._scipy``), the analytic backward (NumPy), the names of the tensor arguments in the
order of the public API, and ``forward_numpy``, the same forward written with NumPy alone: an
independent cross-check, not the truth.  Nothing here imports ``impls``.
"""

from dataclasses import dataclass
from typing import Callable

from . import acu, dau, njet
from .finite_diff import central_diff


@dataclass(frozen=True)
class Layer:
    forward: Callable
    backward: Callable
    args: tuple  # tensor arguments, in call order; the first is x, the last bias
    forward_numpy: Callable  # the cross-check: same signature as forward


LAYERS = {
    "dau": Layer(dau.forward, dau.backward, ("x", "weight", "mu_x", "mu_y", "sigma", "bias"), dau.forward_numpy),
    "dau_gauss": Layer(
        dau.gauss_forward,
        dau.gauss_backward,
        ("x", "weight", "mu_x", "mu_y", "sigma", "bias"),
        dau.gauss_forward_numpy,
    ),
    "acu": Layer(acu.forward, acu.backward, ("x", "weight", "pos_x", "pos_y", "bias"), acu.forward_numpy),
    "njet": Layer(njet.forward, njet.backward, ("x", "alpha", "sigma", "bias"), njet.forward_numpy),
}

__all__ = ["LAYERS", "Layer", "central_diff", "acu", "dau", "njet"]
