"""SciPy/NumPy float64 reference of every layer of reference/README.md: the ground truth of rfbench.

``LAYERS[name]`` gives the forward, the analytic backward and the names of the tensor
arguments in the order of the public API.  Nothing here imports ``impls``.
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


LAYERS = {
    "dau": Layer(dau.forward, dau.backward, ("x", "weight", "mu_x", "mu_y", "sigma", "bias")),
    "dau_gauss": Layer(dau.gauss_forward, dau.gauss_backward, ("x", "weight", "mu_x", "mu_y", "sigma", "bias")),
    "acu": Layer(acu.forward, acu.backward, ("x", "weight", "pos_x", "pos_y", "bias")),
    "njet": Layer(njet.forward, njet.backward, ("x", "alpha", "sigma", "bias")),
}

__all__ = ["LAYERS", "Layer", "central_diff", "acu", "dau", "njet"]
