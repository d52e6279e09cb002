"""Backend ``numba``: CPU kernels (``kernels``), the layers over them (``layers``), and the set-up of numba's CPU
target they need before numba starts (``target``)."""
