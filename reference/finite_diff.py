"""Float64 central differences, to check the reference's analytic gradients."""

import numpy as np


def central_diff(fn, args, name, dy, h=1e-6):
    """Gradient of ``L = sum(dy * fn(**args))`` with respect to ``args[name]``.

    Each element is perturbed by ``+-h`` in turn (O(h^2) truncation error); the result has
    the shape of ``args[name]`` (a 0-d array for a scalar).
    """
    base = np.array(args[name], dtype=np.float64)
    grad = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        vals = []
        for step in (h, -h):
            moved = base.copy()
            moved[idx] += step
            vals.append(np.sum(dy * fn(**{**args, name: moved})))
        grad[idx] = (vals[0] - vals[1]) / (2.0 * h)
    return grad
