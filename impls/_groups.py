"""Channel groups (``groups``, reference/README.md section 6) for a backend whose kernels have none.

``per_group(op)`` wraps a backend's op (``impls.backends``) so that a call with ``groups = G > 1``
runs the op ``G`` times, group ``g`` on the input channels ``g S/G ..`` and the output channels
``g F/G ..``, and concatenates: correct, not fast (``G`` launches; a depthwise layer is ``S`` calls
of a one-channel layer).  With ``groups = 1`` the op runs as it is.  ``torch-fast``, ``numba-cuda``
and ``cupy`` take groups this way; ``torch-naive`` (``conv2d``'s own ``groups``) and ``numba``
(in its kernels) natively.
"""

import torch

from . import _autograd


def _part(name, t, g, groups):
    """Group ``g``'s slice of argument ``name``: ``x`` by channel, a scalar ``sigma`` whole, every ``[F, ...]``
    argument (weights, displacements, ``alpha``, ``bias``, a per-unit ``sigma``) by output channel."""
    if t is None or (name == "sigma" and t.dim() < 3):
        return t
    axis = 1 if name == "x" else 0
    n = t.shape[axis] // groups
    return t.narrow(axis, g * n, n)


def _split(t, hp):
    """The ``G`` groups' arguments and their hyper-parameters (``groups = 1``)."""
    groups = hp["groups"]
    return [{k: _part(k, v, g, groups) for k, v in t.items()} for g in range(groups)], {**hp, "groups": 1}


class _Grouped:
    """An op with a hand-written backward, run per group (``saved`` keys prefixed with the group)."""

    def __init__(self, op):
        self.op = op

    def __getattr__(self, name):
        """The wrapped op's other attributes (its primitives ``P``, tunables) read through."""
        if name == "op":
            raise AttributeError(name)
        return getattr(self.op, name)

    def forward(self, t, hp):
        if hp["groups"] == 1:
            return self.op.forward(t, hp)
        parts, hp1 = _split(t, hp)
        ys, saved = [], {}
        for g, tg in enumerate(parts):
            y, s = self.op.forward(tg, hp1)
            ys.append(y)
            saved.update({f"{g}:{k}": v for k, v in s.items()})
        return torch.cat(ys, 1), saved

    def backward(self, t, saved, dy, hp, needs):
        if hp["groups"] == 1:
            return self.op.backward(t, saved, dy, hp, needs)
        parts, hp1 = _split(t, hp)
        fg = dy.shape[1] // hp["groups"]
        got = []
        for g, tg in enumerate(parts):
            sg = {k.split(":", 1)[1]: saved[k] for k in saved if k.startswith(f"{g}:")}
            dyg = dy[:, g * fg : (g + 1) * fg].contiguous()
            got.append(self.op.backward(tg, sg, dyg, hp1, needs))
        return {k: _join(k, t[k], [d[k] for d in got]) for k in got[0]}


class _GroupedResave(_Grouped):
    def resave(self, t, hp):
        if hp["groups"] == 1:
            return self.op.resave(t, hp)
        parts, hp1 = _split(t, hp)
        return {f"{g}:{k}": v for g, tg in enumerate(parts) for k, v in self.op.resave(tg, hp1).items()}


def _join(name, t, parts):
    """The groups' gradients of argument ``name`` (of tensor ``t``) as one: a scalar ``sigma``'s summed (in
    group order), the rest concatenated like ``_part`` split them."""
    if name == "sigma" and t.dim() < 3:
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total
    return torch.cat(parts, 1 if name == "x" else 0)


def per_group(op):
    """``op`` (either kind of ``impls.backends``) taking ``groups`` per group, as the module doc says."""
    if isinstance(op, _autograd.Differentiable):

        def forward(t, hp):
            if hp["groups"] == 1:
                return op.forward(t, hp)
            parts, hp1 = _split(t, hp)
            return torch.cat([op.forward(tg, hp1) for tg in parts], 1)

        return _autograd.Differentiable(forward)
    return _GroupedResave(op) if hasattr(op, "resave") else _Grouped(op)
