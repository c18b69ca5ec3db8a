"""The built-in methods; importing this package registers them in
:data:`avalanche_exmask.registry.METHODS` (see :mod:`avalanche_exmask.methods.base` to add one)."""
from avalanche_exmask.methods import avalanche_baselines, buffered, exemplar_masking, prompting  # noqa: F401  (registration)
