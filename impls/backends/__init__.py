"""The backends: one module (or folder) per backend of the registry (``impls._registry``)."""
