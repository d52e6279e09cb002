"""The backends, one module (or folder) each, and the interface every one of them provides.

=============  ==========================  =============================================
registry name  module                      what
=============  ==========================  =============================================
reference      ``reference.py``            the float64 SciPy reference (``reference/``)
torch-naive    ``torch_naive.py``          the dense kernel, then ``conv2d``; autograd
torch-fast     ``torch_fast.py``           the efficient algorithms in torch operations
numba          ``numba/layers.py``         over the CPU kernels of ``numba/kernels.py``
numba-cuda     ``cuda/numba_prims.py``     ``cuda/layers.py`` over ``numba.cuda`` kernels
cupy           ``cuda/cupy_prims.py``      ``cuda/layers.py`` over the CUDA C of ``cuda/*.cu``
dcls           ``dcls.py``                 peer: DCLS's kernel construction + conv2d
deform-conv2d  ``deform_conv2d.py``        peer: ``torchvision.ops.deform_conv2d``
=============  ==========================  =============================================

The last two are **peers** (registry ``origin="peer"``): external implementations behind our
signatures through the exact mappings of reference/README.md section 12, judged and timed like
ours but never chosen by ``"auto"``.  A peer's op raises ``impls.Inexpressible`` (a
``BackendUnavailable``) for a call its mapping cannot make exact; the matrix and the benchmark
record that as a refusal with its reason.

The backend interface
---------------------

A backend is a module (named by its record in ``impls/_registry.py``) that exports

    OPS: dict[str, op]        one op per layer it implements (the keys are its record's ``layers``)

An op is one of two kinds (``impls._autograd``):

- an object with a hand-written backward::

      forward(t, hp) -> (y, saved)                     saved: dict of tensors for the backward
      backward(t, saved, dy, hp, needs) -> {name: gradient of that argument}
      resave(t, hp) -> saved                           optional: rebuilds saved from the inputs

- ``Differentiable(forward)``: ``forward(t, hp) -> y`` in differentiable torch code; torch
  autograd takes its gradients, to any order (its record lists ``"double_backward"``).

``t`` maps the layer's tensor arguments, by the names of its table (``reference/layers.py``:
``x``, ``weight``, ``mu_x``, ..., ``bias`` is None when absent), to tensors that passed the
checks of reference/README.md section 7: one dtype and one device, ``sigma`` a one-element
tensor (or ``[F,S,K]`` for ``dau_gauss``), any strides.  ``y`` is ``[N, F, Ho, Wo]`` in ``x``'s
dtype; a gradient has its argument's shape and dtype; ``needs`` names the arguments whose
gradient is wanted, and only those are returned.  A forward runs under ``torch.no_grad`` (a
``Differentiable`` may run with grad enabled), every op with autocast off.  An op modifies none
of its inputs, and NaN or inf in ``x``, the weights or ``bias`` propagates (section 7).

``hp`` holds the hyper-parameters in one vocabulary for every backend, built once per call by
``impls._ops.backend_hp``:

- every hyper-parameter of the layer's table, by its name, all given (defaults filled in);
- the layer's radius (``blur_radius`` of ``dau``, ``radius`` of ``dau_gauss`` and ``njet``) is
  the API's: an int (a default resolved from ``sigma``), the radius over whose ``2 r + 1`` taps
  the Gaussian is normalised;
- ``keep`` (layers with a radius): the centre taps ``|t| <= keep <= radius`` that can join an
  output to a pixel.  A backend may compute with those taps alone: the others change no output
  and no gradient.
- ``groups`` (dau, dau_gauss, njet): channel groups, the weights ``[F, S/groups, ...]``
  (reference/README.md section 6).  A backend whose kernels have none wraps its op in
  ``impls._groups.per_group`` (one pass per group, concatenated: correct, not fast).

No value of a tensor on a device is read on the host, by ``backend_hp`` or by a backend: such a
read is a host-device synchronisation.  So ``keep`` of ``dau``, which depends on the
displacements, is found only for CPU tensors and is the whole radius on a device.

Adding a backend
----------------

A module here that exports ``OPS``, and one ``Backend`` record in ``impls/_registry.py`` (name,
module, devices, dtypes, the modules it imports, the distributions whose versions results
record).  A CUDA backend over the layers of ``cuda/layers.py`` is one primitives file,
``cuda/<name>_prims.py``, ending in ``OPS = layers.ops(Prims())``.  Nothing else changes: the
CLI's choices, ``rfbench backends``, the environment every result records and the report's
environment table read the registry.  ``suites/test_backends.py`` checks every registered
backend against this interface; the correctness matrix (``suites/test_matrix.py``, ``rfbench
matrix``) then runs it on every case, and ``rfbench bench`` times it.
"""
