"""Backend ``reference``: the float64 SciPy reference behind the public API (CPU, float64).

Tensors go to NumPy and back; gradients come from the reference's analytic backward
through the autograd bridge.
"""

import numpy as np
import torch

import reference

from .. import _autograd

_BACKWARD_ONLY = ("mu_grad",)  # hyper-parameters the forward does not take


def _np(t):
    return {k: (None if v is None else v.detach().cpu().numpy()) for k, v in t.items()}


class _Op:
    def __init__(self, layer):
        self.layer = reference.LAYERS[layer]

    def forward(self, t, hp):
        fwd_hp = {k: v for k, v in hp.items() if k not in _BACKWARD_ONLY}
        return torch.from_numpy(np.ascontiguousarray(self.layer.forward(**_np(t), **fwd_hp))), {}

    def backward(self, t, saved, dy, hp, needs):
        grads = self.layer.backward(**_np(t), dy=dy.numpy(), **hp)
        return {n: torch.from_numpy(np.ascontiguousarray(grads[n])).reshape(t[n].shape) for n in needs}


_OPS = {name: _Op(name) for name in reference.LAYERS}


def _run(layer, tensors, hp):
    return _autograd.apply(_OPS[layer], hp, reference.LAYERS[layer].args, tensors)


def dau(x, weight, mu_x, mu_y, sigma, bias, *, stride, blur_radius, mu_grad):
    hp = {"stride": stride, "blur_radius": blur_radius, "mu_grad": mu_grad}
    return _run("dau", (x, weight, mu_x, mu_y, sigma, bias), hp)


def dau_gauss(x, weight, mu_x, mu_y, sigma, bias, *, radius, stride):
    return _run("dau_gauss", (x, weight, mu_x, mu_y, sigma, bias), {"radius": radius, "stride": stride})


def acu(x, weight, pos_x, pos_y, bias, *, stride):
    return _run("acu", (x, weight, pos_x, pos_y, bias), {"stride": stride})


def njet(x, alpha, sigma, bias, *, order, radius, stride):
    return _run("njet", (x, alpha, sigma, bias), {"order": order, "radius": radius, "stride": stride})
