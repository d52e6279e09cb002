"""Backend ``numba``: CPU kernels (``kernels``)."""
