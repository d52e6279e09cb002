"""One bridge from a backend's op to torch autograd (the op interface: ``impls.backends``).

An op with a hand-written backward is any object with

    forward(t: dict[str, Tensor | None], hp: dict) -> (y, saved: dict[str, Tensor])
    backward(t, saved, dy, hp, needs: set[str]) -> dict[str, Tensor]
    resave(t, hp) -> saved          (optional: rebuilds ``saved`` from the inputs)

where ``t`` maps the layer's argument names (``x``, ``weight``, ...) to tensors, ``hp`` holds
the normalised hyper-parameters (``impls._ops.backend_hp``) and ``needs`` names the arguments
whose gradient is wanted.  ``backward`` returns a gradient of each needed argument's shape and
dtype.  An op written in differentiable torch code is a ``Differentiable``: its forward alone,
differentiated by torch autograd (to any order).

``apply(op, hp, names, tensors)`` runs an op.  What it does depends on who called it
(``impls._ops``):

- eager (the default): a ``torch.autograd.Function`` runs ``op.forward`` and, in the backward,
  ``op.backward`` with the tensors ``forward`` saved.  The gradient is computed once: a second
  differentiation (``create_graph=True`` then backward, e.g. a gradient penalty) raises an error
  that names the backend and the backends that support it.
- inside the ``rfbench::<layer>`` custom operator: ``op.forward`` only (-> ``y``);
- inside ``rfbench::<layer>_backward``: ``op.backward`` only (-> the gradients by name), with
  ``saved`` rebuilt by ``op.resave`` (or, for an op without one, by running ``op.forward`` again
  when ``backward`` first reads ``saved``), since a compiled graph keeps only the op's inputs.

A ``Differentiable`` returns its forward's ``y`` in every case (still attached to the graph of
its inputs: the custom operator's backward differentiates it).  Backward passes run with
autocast disabled, as the forward does (see ``impls._ops``).
"""

import contextlib
import threading
from collections.abc import Mapping

import torch

from ._registry import twice_differentiable

_state = threading.local()  # .label: "backend layer" of the call; .direct: None, "forward" or a _Grad


def _label():
    return getattr(_state, "label", "this backend")


class _Grad:
    """A request for ``op.backward``: incoming gradient ``dy`` and the argument names wanted."""

    def __init__(self, dy, needs):
        self.dy, self.needs = dy, needs


class calling:
    """Context of one public call: ``label`` names it in errors; ``direct`` is None (autograd bridge),
    ``"forward"`` or a ``_Grad`` (run the op's forward or backward directly)."""

    def __init__(self, label, direct=None):
        self.new = (label, direct)

    def __enter__(self):
        self.old = (getattr(_state, "label", None), getattr(_state, "direct", None))
        _state.label, _state.direct = self.new

    def __exit__(self, *exc):
        _state.label, _state.direct = self.old


class _Rerun(Mapping):
    """``saved`` of an op without ``resave``: runs ``op.forward`` once, when first read."""

    def __init__(self, op, t, hp):
        self.op, self.t, self.hp, self.got = op, t, hp, None

    def _get(self):
        if self.got is None:
            with torch.no_grad():
                self.got = self.op.forward(self.t, self.hp)[1]
        return self.got

    def __getitem__(self, key):
        return self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self):
        return len(self._get())


_AUTOCAST_TYPES = {
    k for k in ("cpu", "cuda", "xpu", "mps", "hpu", "mtia", "maia") if torch.amp.is_autocast_available(k)
}


def autocast_on(device):
    """Whether autocast is enabled for ``device``'s type (never for types autocast does not know, e.g. meta)."""
    kind = device.type
    return kind in _AUTOCAST_TYPES and torch.is_autocast_enabled(kind)


def no_autocast(device):
    """A context with autocast disabled for ``device``'s type."""
    return torch.autocast(device.type, enabled=False) if autocast_on(device) else contextlib.nullcontext()


class _OnceOnly(torch.autograd.Function):
    """Identity on the first ``k`` tensors (the gradients ``_Bridge`` computed); depends on the rest (the
    inputs they were computed from) so that differentiating the gradients reaches this node and fails."""

    @staticmethod
    def forward(ctx, label, k, *tensors):
        ctx.label = label
        return tuple(g.clone() for g in tensors[:k])

    @staticmethod
    def backward(ctx, *grads):
        others = " or ".join(f"backend='{n}'" for n in twice_differentiable())
        raise RuntimeError(
            f"{ctx.label}: double backward is not supported: this backend computes its gradient once (a "
            "hand-written backward), so that gradient cannot be differentiated again (create_graph=True, e.g. "
            f"a gradient penalty); use {others}, whose gradients are differentiable to any order"
        )


class _Bridge(torch.autograd.Function):
    @staticmethod
    def forward(ctx, op, hp, names, label, *tensors):
        t = dict(zip(names, tensors))
        with torch.no_grad():
            y, saved = op.forward(t, hp)
        ctx.op, ctx.hp, ctx.names, ctx.label = op, hp, names, label
        ctx.saved_names = tuple(saved)
        present = [n for n in names if t[n] is not None]
        ctx.present = present
        ctx.save_for_backward(*[t[n] for n in present], *saved.values())
        return y

    @staticmethod
    def backward(ctx, dy):
        vals = ctx.saved_tensors
        k = len(ctx.present)
        t = dict.fromkeys(ctx.names)
        t.update(zip(ctx.present, vals[:k]))
        saved = dict(zip(ctx.saved_names, vals[k:]))
        needs = {n for n, req in zip(ctx.names, ctx.needs_input_grad[4:]) if req}
        grads = {}
        if needs:
            with torch.no_grad(), no_autocast(dy.device):
                grads = ctx.op.backward(t, saved, dy.contiguous(), ctx.hp, needs)
        out = [grads.get(n) if n in needs else None for n in ctx.names]
        if torch.is_grad_enabled() and needs:  # create_graph=True: mark the gradients once-only
            got = [g for g in out if g is not None]
            deps = [v for v in (*vals[:k], dy) if v.requires_grad]
            it = iter(_OnceOnly.apply(ctx.label, len(got), *got, *deps))
            out = [None if g is None else next(it) for g in out]
        return (None, None, None, None, *out)


class Differentiable:
    """An op written in differentiable torch code: ``forward(t, hp) -> y``, and torch autograd
    differentiates it (to any order: the backends whose passes list ``"double_backward"``)."""

    def __init__(self, forward):
        self.forward = forward


def apply(op, hp, names, tensors):
    """Run ``op`` on ``tensors`` (ordered as ``names``). -> ``y`` (or the gradients, see the module doc)"""
    if isinstance(op, Differentiable):
        return op.forward(dict(zip(names, tensors)), hp)
    direct = getattr(_state, "direct", None)
    if direct is None:
        return _Bridge.apply(op, hp, tuple(names), _label(), *tensors)
    t = {n: (None if v is None else v.detach()) for n, v in zip(names, tensors)}
    if direct == "forward":
        with torch.no_grad():
            return op.forward(t, hp)[0]
    saved = op.resave(t, hp) if hasattr(op, "resave") else _Rerun(op, t, hp)
    with torch.no_grad():
        return op.backward(t, saved, direct.dy.contiguous(), hp, direct.needs)
