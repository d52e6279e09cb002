"""Backend ``reference``: the float64 SciPy reference behind the public API (CPU, float64).

Tensors go to NumPy and back; each layer's forward and analytic backward are those of its
table (``reference.LAYERS``), its gradients reach torch autograd through the bridge.
"""

import numpy as np
import torch

from ...reference import LAYERS


def _np(t):
    return {k: (None if v is None else v.detach().cpu().numpy()) for k, v in t.items()}


class _Op:
    """One layer of the reference: its table's forward and backward, on the hyper-parameters they take."""

    def __init__(self, layer):
        self.layer = layer

    def _hp(self, hp, forward):
        return self.layer.forward_params(hp) if forward else {p.name: hp[p.name] for p in self.layer.params}

    def forward(self, t, hp):
        y = self.layer.forward(**_np(t), **self._hp(hp, True))
        return torch.from_numpy(np.ascontiguousarray(y)), {}

    def backward(self, t, saved, dy, hp, needs):
        grads = self.layer.backward(**_np(t), dy=dy.numpy(), **self._hp(hp, False))
        return {n: torch.from_numpy(np.ascontiguousarray(grads[n])).reshape(t[n].shape) for n in needs}


OPS = {name: _Op(layer) for name, layer in LAYERS.items()}
