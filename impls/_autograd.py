"""One bridge from a backend's hand-written forward/backward to torch autograd.

A backend op is any object with

    forward(t: dict[str, Tensor | None], hp: dict) -> (y, saved: dict[str, Tensor])
    backward(t, saved, dy, hp, needs: set[str]) -> dict[str, Tensor]

where ``t`` maps the layer's argument names (``x``, ``weight``, ...) to tensors, ``hp`` holds
the validated hyper-parameters and ``needs`` names the arguments whose gradient is wanted.
``backward`` returns a gradient of each needed argument's shape and dtype.
"""

import torch


class _Bridge(torch.autograd.Function):
    @staticmethod
    def forward(ctx, op, hp, names, *tensors):
        t = dict(zip(names, tensors))
        with torch.no_grad():
            y, saved = op.forward(t, hp)
        ctx.op, ctx.hp, ctx.names = op, hp, names
        ctx.saved_names = tuple(saved)
        present = [n for n in names if t[n] is not None]
        ctx.present = present
        ctx.save_for_backward(*[t[n] for n in present], *saved.values())
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        vals = ctx.saved_tensors
        k = len(ctx.present)
        t = dict.fromkeys(ctx.names)
        t.update(zip(ctx.present, vals[:k]))
        saved = dict(zip(ctx.saved_names, vals[k:]))
        needs = {n for n, req in zip(ctx.names, ctx.needs_input_grad[3:]) if req}
        grads = ctx.op.backward(t, saved, dy.contiguous(), ctx.hp, needs) if needs else {}
        return (None, None, None, *[grads.get(n) if n in needs else None for n in ctx.names])


def apply(op, hp, names, tensors):
    """Run ``op`` on ``tensors`` (ordered as ``names``) with autograd support. -> ``y``"""
    return _Bridge.apply(op, hp, tuple(names), *tensors)
