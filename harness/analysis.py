"""Float64 studies of the DAU approximations, on the reference (no backend involved):

- ``gap``: how far the efficient form (blur then bilinear shift, ``dau``) is from the Gaussian
  kernel form (``dau_gauss``) on the same parameters, against sigma and the fractional part
  of the displacement.  At integer displacements the two agree; in between, bilinear
  interpolation of a blurred map is not a shifted Gaussian.
- ``mu_grad``: the relative difference of the exact displacement gradient and DAU IJCV Eq. 16
  (``mu_grad="gauss"``) against sigma, displacements drawn at random.
"""

import math

import numpy as np

from .. import reference

SIGMAS = (0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
FRACS = tuple(np.round(np.arange(0.0, 1.0, 0.125), 3))


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def gap_rows(seed=0, size=24):
    """-> rows ``{kind: "gap", sigma, frac, rel_gap}``: ``||dau - dau_gauss|| / ||dau_gauss||``.

    Both windows hold the Gaussian to 6 sigma, so what remains is the bilinear approximation,
    not truncation."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 1, size, size))
    one = np.ones((1, 1, 1))
    rows = []
    for sig in SIGMAS:
        rb = math.ceil(6 * sig)
        for frac in FRACS:
            mx, my = one * (2 + frac), one * (-1 + frac)
            y = reference.dau.forward(x, one, mx, my, sig, stride=1, blur_radius=rb)
            g = reference.dau.gauss_forward(x, one, mx, my, np.asarray(sig), radius=rb + 3, stride=1)
            rows.append({"kind": "gap", "sigma": sig, "frac": float(frac), "rel_gap": _rel(y, g)})
    return rows


def mu_grad_rows(seed=0, size=16):
    """-> rows ``{kind: "mu_grad", sigma, rel_diff}``: ``||g_exact - g_eq16|| / ||g_eq16||`` over mu_x, mu_y."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, size, size))
    w = rng.standard_normal((4, 3, 2))
    mx, my = rng.uniform(-3, 3, (4, 3, 2)), rng.uniform(-3, 3, (4, 3, 2))
    dy = rng.standard_normal((2, 4, size, size))
    rows = []
    for sig in SIGMAS:
        rb = math.ceil(3 * sig)
        g = {
            m: reference.dau.backward(x, w, mx, my, sig, None, dy, blur_radius=rb, mu_grad=m)
            for m in ("exact", "gauss")
        }
        a = np.concatenate([g["exact"]["mu_x"].ravel(), g["exact"]["mu_y"].ravel()])
        b = np.concatenate([g["gauss"]["mu_x"].ravel(), g["gauss"]["mu_y"].ravel()])
        rows.append({"kind": "mu_grad", "sigma": sig, "rel_diff": _rel(a, b)})
    return rows


def rows(seed=0):
    return gap_rows(seed) + mu_grad_rows(seed)
