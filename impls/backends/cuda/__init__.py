"""The CUDA backends, ``numba-cuda`` and ``cupy``: the layers written once (``layers``) over the primitives of each."""
