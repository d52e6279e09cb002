"""The layers as PyTorch custom operators, the one function that runs a validated call, and the
hyper-parameters every backend receives.

Every public call ends in ``call(layer, backend, tensors, hp)``: autocast's rule (below), the
checks of reference/README.md section 7 (``impls._validate``), then

- plain eager tensors (no ``torch.compile`` tracing, no meta or fake tensors, no dispatch mode):
  ``run`` at once, with the backend's own autograd (``impls._autograd``, or torch autograd
  through ``torch-naive``'s code, which therefore supports double backward);
- otherwise: the custom operator ``torch.ops.rfbench.<layer>`` (``dau``, ``dau_gauss``, ``acu``,
  ``njet``), also under ``torch.jit.trace`` (a trace records the op, not the backend's code).
  ``torch.compile`` sees one opaque op per layer (no graph break, nothing of the backend
  traced); its fake implementation gives the output shape ``[N, F, ceil(H/stride), ceil(W/stride)]``
  without computing, for meta and fake tensors; its real implementation is ``run``. The gradient is
  the op ``rfbench::<layer>_backward`` (also opaque), which runs the backend's backward: the
  hand-written one, or ``torch.autograd.grad`` through ``torch-naive``'s forward (recomputed).
  Both schemas are written from the layer's table (``reference/layers.py``).

``run`` checks the values (section 7), normalises the hyper-parameters once (``backend_hp``: the
vocabulary of the backend interface, ``impls.backends``), picks the backend's op from the registry
and runs it with autocast off.  A radius left as None (``blur_radius`` of ``dau``, ``radius`` of
``njet``) is an op argument left as None and resolved inside ``run`` from ``sigma``'s value, on the
real tensor: no output shape depends on it, so a compiled graph does not change (or recompile)
when a learned sigma changes the radius.

Autocast (one rule for every backend): the layers are in autocast's float32 list. Under
``torch.autocast`` on ``x``'s device type, float16/bfloat16 arguments are cast to float32
(float32 and float64 are kept) before validation, and the backend runs with autocast disabled,
so it computes in the arguments' dtype and returns it. Outside autocast nothing is cast. The
hand-written backwards run with autocast disabled too; ``torch-naive``'s backward is torch autograd,
which follows the autocast state of the thread that runs it: call ``backward`` outside autocast, as
PyTorch recommends, and it is computed in float32 as well.

Layout: any strides are accepted; the op returns contiguous tensors (as its fake does).
"""

import contextlib

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..reference.layers import LAYERS
from . import _autograd, _math, _validate
from ._registry import resolve, select

_REDUCED = (torch.float16, torch.bfloat16)


def autocast_args(x, *args):
    """Autocast's float32 rule for ``(x, *args)``: reduced-precision floating tensors -> float32 when autocast is
    on for ``x``'s device type; anything else unchanged. -> the same tuple"""
    if not (isinstance(x, torch.Tensor) and _autograd.autocast_on(x.device)):
        return (x, *args)
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype in _REDUCED else a for a in (x, *args))


def backend_hp(layer, t, hp):
    """The hyper-parameters a backend's op receives (``impls.backends``): the layer's own, with its
    radius resolved (a None one from ``sigma``'s value by the table's rule, ``_validate.radius_from``),
    and for a layer with a radius ``keep``: the centre taps ``|t| <= keep`` of that radius that can join
    an output to a pixel.  The radius is the API's (the Gaussian is normalised over its ``2 r + 1``
    taps); a backend may drop the taps beyond ``keep`` without changing any output or gradient.

    ``keep`` of ``dau`` depends on the displacements (``_math.blur_reach``), so it is found on the host
    only where reading them is free (``_validate.free_to_read``); on a device it is the whole radius (no
    synchronisation).  For ``dau_gauss`` and ``njet`` it comes from the shapes (``_math.centred_reach``).
    ``layer``: a ``reference.layers.Layer``; ``t``: tensors by name. -> dict
    """
    hp = dict(hp)
    if layer.radius is None:
        return hp
    r = hp[layer.radius]
    if r is None:
        r = hp[layer.radius] = _validate.radius_from(layer, hp, t["sigma"])
    x = t["x"]
    if layer.name != "dau":
        hp["keep"] = _math.centred_reach(x.shape[2:], hp["stride"], r)
    elif _validate.free_to_read(x):
        fl = [_math.floors(t[m]) for m in ("mu_y", "mu_x")]
        hp["keep"] = _math.blur_reach(*fl, hp["stride"], x.shape[2:], r)
    else:
        hp["keep"] = r
    return hp


def run(layer, backend, tensors, hp, direct=None):
    """Value checks, the backend's hyper-parameters, backend selection, then the backend's op.

    ``tensors`` in the table's order (``LAYERS[layer].tensors``), validated; ``hp`` by name. ``direct``: see
    ``impls._autograd.calling``. -> ``[N, F, Ho, Wo]`` (or the gradients for a backward ``direct``)
    """
    spec = LAYERS[layer]
    t = dict(zip(spec.tensors, tensors))
    _validate.values(spec.function, [(n, t[n]) for n in spec.finite], [(n, t[n]) for n in spec.positive])
    kw = backend_hp(spec, t, hp)
    name, op = select(backend, layer, t["x"])
    return _apply(op, spec, tensors, kw, f"backend '{name}', layer '{layer}'", direct)


def apply(op, layer, tensors, hp):
    """Run one backend op outside the registry (a backend under a simulator or an emulation, in the tests): the
    same hyper-parameters as ``run`` (defaults filled in, ``backend_hp``), no checks."""
    spec = LAYERS[layer]
    kw = backend_hp(spec, dict(zip(spec.tensors, tensors)), {**spec.defaults(), **hp})
    return _apply(op, spec, tensors, kw, f"layer '{layer}'")


def _apply(op, spec, tensors, kw, label, direct=None):
    x = tensors[0]
    threads = torch.get_num_threads()
    try:
        with _autograd.calling(label, direct), _autograd.no_autocast(x.device):
            return _autograd.apply(op, kw, spec.tensors, tensors)
    finally:
        if torch.get_num_threads() != threads:  # numba's OpenMP layer resets it on its first parallel run
            torch.set_num_threads(threads)


def _symbolic(tensors):
    """Whether the call is traced or has no data: compiling, ``torch.jit.trace``, a dispatch mode on, or
    meta/fake tensors. ``torch.jit.trace`` records the custom op with its arguments, so a radius left as
    None is resolved from sigma each time the trace runs, not frozen at the value sigma had when traced."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or _get_current_dispatch_mode() is not None:
        return True
    return any(t is not None and (t.is_meta or isinstance(t, FakeTensor)) for t in tensors)


def call(layer, backend, tensors, hp):
    """A public call: autocast's rule, the checks of section 7, then eagerly or through the custom operator when
    traced or without data (module doc).  ``tensors`` in the table's order, ``hp`` by name."""
    spec = LAYERS[layer]
    tensors, hp = _validate.check(spec, autocast_args(*tensors), hp)
    if _symbolic(tensors):
        return getattr(torch.ops.rfbench, layer)(*tensors, backend, *(hp[p.name] for p in spec.params))
    return run(layer, backend, tensors, hp)


# ---------------------------------------------------------------- the custom operators


def _split(layer, args):
    """Op arguments -> ``(tensors, backend, hp by name)``."""
    spec = LAYERS[layer]
    k = len(spec.tensors)
    return args[:k], args[k], {p.name: v for p, v in zip(spec.params, args[k + 1 :])}


def _schema(layer, backward=False):
    spec = LAYERS[layer]
    tensors = [f"Tensor{'?' if n == 'bias' else ''} {n}" for n in spec.tensors]
    hp = [f"{p.schema} {p.name}" for p in spec.params]
    if backward:
        return "(" + ", ".join(["Tensor dy", *tensors, "str backend", *hp, "bool[] needs"]) + ") -> Tensor[]"
    return "(" + ", ".join([*tensors, "str backend", *hp]) + ") -> Tensor"


def _out_shape(layer, tensors, hp):
    n, _, h, w = tensors[0].shape
    st = hp["stride"]
    return n, tensors[1].shape[0], (h + st - 1) // st, (w + st - 1) // st


def _check_backend(layer, backend, x):
    """The registry's refusal at trace time (fake tensors stand for a real device; meta for any)."""
    if x.device.type != "meta":
        resolve(backend, layer, x.device, x.dtype)


def _forward_op(layer):
    def impl(*args):
        tensors, backend, hp = _split(layer, args)
        with torch.no_grad():
            return run(layer, backend, tensors, hp, direct="forward").contiguous()

    def fake(*args):
        tensors, backend, hp = _split(layer, args)
        _check_backend(layer, backend, tensors[0])
        return tensors[0].new_empty(_out_shape(layer, tensors, hp))

    op = torch.library.custom_op(f"rfbench::{layer}", impl, mutates_args=(), schema=_schema(layer))
    op.register_fake(fake)
    return op


def _backward_op(layer):
    names = LAYERS[layer].tensors

    def impl(dy, *args):
        *args, needs = args
        tensors, backend, hp = _split(layer, args)
        want = {n for n, need in zip(names, needs) if need}
        # Leaves that require grad where wanted: torch-naive's plain autograd code differentiates through them;
        # a hand-written backward receives them detached (``_autograd.apply``).
        leaves = [None if t is None else t.detach().requires_grad_(n in want) for n, t in zip(names, tensors)]
        with _autograd_on():
            got = run(layer, backend, leaves, hp, direct=_autograd._Grad(dy, want))
        if isinstance(got, torch.Tensor):  # plain autograd code: differentiate its forward
            wanted = [leaf for n, leaf in zip(names, leaves) if n in want]
            got = dict(zip([n for n in names if n in want], torch.autograd.grad(got, wanted, dy, allow_unused=True)))
        return [_grad(got.get(n), t) for n, t in zip(names, tensors) if n in want]

    def fake(dy, *args):
        *args, needs = args
        tensors = args[: len(names)]
        return [torch.empty_like(t, memory_format=torch.contiguous_format) for t, need in zip(tensors, needs) if need]

    op = torch.library.custom_op(f"rfbench::{layer}_backward", impl, mutates_args=(), schema=_schema(layer, True))
    op.register_fake(fake)
    return op


def _autograd_on():
    """Autograd recording inside an op's implementation, which the dispatcher runs below autograd (the TLS
    exclude set holds the autograd keys): the same TLS without them, and grad mode on."""
    keys = torch._C._dispatch_tls_local_exclude_set()
    for k in ("AutogradFunctionality", "AutogradOther", "AutogradNestedTensor", "ADInplaceOrView"):
        keys = keys.remove(getattr(torch._C.DispatchKey, k))
    stack = contextlib.ExitStack()
    stack.enter_context(torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), keys))
    stack.enter_context(torch.enable_grad())
    return stack


def _grad(g, t):
    """A gradient as the op returns it: ``t``'s shape, contiguous; zeros where autograd found no path."""
    return torch.zeros_like(t, memory_format=torch.contiguous_format) if g is None else g.reshape(t.shape).contiguous()


def _register_autograd(layer, fwd, bwd):
    k = len(LAYERS[layer].tensors)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:k])
        ctx.rest = inputs[k:]

    def backward(ctx, dy):
        tensors = ctx.saved_tensors
        needs = [bool(req) and t is not None for req, t in zip(ctx.needs_input_grad[:k], tensors)]
        grads = iter(bwd(dy, *tensors, *ctx.rest, needs) if any(needs) else ())
        return (*[next(grads) if need else None for need in needs], *[None] * len(ctx.rest))

    fwd.register_autograd(backward, setup_context=setup_context)


OPS = {}
for _layer in LAYERS:
    OPS[_layer] = _forward_op(_layer)
    _register_autograd(_layer, OPS[_layer], _backward_op(_layer))
