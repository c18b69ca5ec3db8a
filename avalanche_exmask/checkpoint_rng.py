"""The global random states in a checkpoint: Python's, NumPy's, torch's and CUDA's, gathered for
saving, checked on scratch generators and restored.

Tensors: ``rng/torch`` (``uint8``, torch's generator state), ``rng/numpy`` (``int64 [624]``, the
Mersenne Twister's keys) and ``rng/cuda/<device>`` (``uint8``, one per CUDA device, when CUDA is
initialised). The skeleton's ``rng`` section holds the rest: Python's state as
``[version, [internal state], gauss]``, NumPy's as ``[kind, position, has_gauss, cached_gaussian]``
and the number of CUDA states.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch

from avalanche_exmask.checkpoint_file import is_count, require

__all__ = ["rng_section", "check_rng_section", "apply_rng", "check_generator_state"]

logger = logging.getLogger(__name__)


def rng_section(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The global random states: Python's, NumPy's, torch's (and CUDA's when initialised); the
    tensors go to ``tensors``, the rest is returned (JSON-ready)."""
    version, internal, gauss = random.getstate()
    # the legacy form (the default): (kind, keys uint32 [624], position, has_gauss, cached_gaussian)
    kind, keys, position, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    tensors["rng/torch"] = torch.get_rng_state()
    tensors["rng/numpy"] = torch.from_numpy(keys.astype(np.int64))
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    for index, state in enumerate(cuda):
        tensors[f"rng/cuda/{index}"] = state
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, int(position), int(has_gauss), float(cached)],
        "cuda_devices": len(cuda),
    }


def check_generator_state(state: torch.Tensor, what: str) -> None:
    """Try ``state`` on a scratch torch generator.

    :raises ValueError: naming ``what``, if the generator refuses it.
    """
    try:
        torch.Generator().set_state(state)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{what}: invalid state ({error})") from error


def check_rng_section(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The global random states of a file's ``rng`` section, each tried on a scratch generator
    first, ready for :func:`apply_rng`.

    :raises ValueError: naming the first malformed or invalid state.
    """
    require(isinstance(skeleton, dict), "malformed rng section")
    python, numpy_state = skeleton.get("python"), skeleton.get("numpy")
    require(
        isinstance(python, list) and len(python) == 3 and isinstance(python[1], list), "malformed Python RNG state"
    )
    python_state = (python[0], tuple(python[1]), python[2])
    keys = tensors.get("rng/numpy")
    if not (isinstance(numpy_state, list) and len(numpy_state) == 4 and keys is not None):
        raise ValueError("malformed NumPy RNG state")
    numpy_full = (numpy_state[0], keys.numpy().astype(np.uint32), *numpy_state[1:])
    torch_state = tensors.get("rng/torch")
    if torch_state is None:
        raise ValueError("torch RNG state missing")
    try:
        random.Random().setstate(python_state)
        np.random.RandomState().set_state(numpy_full)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"invalid Python or NumPy RNG state ({error})") from error
    check_generator_state(torch_state, "torch RNG")
    n_cuda = skeleton.get("cuda_devices")
    require(is_count(n_cuda), "malformed CUDA RNG count")
    cuda = [tensors.get(f"rng/cuda/{index}") for index in range(n_cuda)]
    require(all(state is not None for state in cuda), "CUDA RNG state missing")
    return {"python": python_state, "numpy": numpy_full, "torch": torch_state, "cuda": cuda}


def apply_rng(states: Mapping[str, Any]) -> None:
    """Set the global random states :func:`check_rng_section` returned (CUDA's only on a machine
    with as many CUDA devices as were saved; else with a warning)."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    cuda = states["cuda"]
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    elif cuda:
        logger.warning("checkpoint holds %d CUDA RNG state(s) that this machine cannot take; not restored", len(cuda))
