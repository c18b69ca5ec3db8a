"""Switching a model between training and eval mode cheaply, for switches made every training step.

``torch.nn.Module.train(mode)`` sets ``training`` on every module through ``Module.__setattr__``
(a few microseconds a module). An open_clip ViT-B/16 with SSF parametrizations is about 1,200
modules, so ``model.eval()`` and ``model.train()`` around a no-grad pass cost milliseconds on the
CPU: a large share of a GPU training step when done every step (the current data's scoring pass
before their trip through the codec). :func:`set_train_mode` leaves every module in the state
``Module.train(mode)`` leaves it in, writing the flag straight into each module's ``__dict__``;
a module whose class overrides ``train`` gets its own ``train(mode)`` call (which sets its
subtree), as ``Module.train`` would call it.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["set_train_mode", "eval_mode"]

_MODULE_TRAIN = torch.nn.Module.train


def set_train_mode(model: torch.nn.Module, mode: bool) -> None:
    """Put ``model`` and its submodules in training (``mode=True``) or eval mode, as
    ``model.train(mode)`` does."""
    if not isinstance(mode, bool):
        raise ValueError(f"training mode is expected to be boolean; got {mode!r}")
    pending: list[torch.nn.Module | None] = [model]
    while pending:
        module = pending.pop()
        if module is None:  # a registered None submodule
            continue
        if type(module).train is not _MODULE_TRAIN:
            module.train(mode)
            continue
        module.__dict__["training"] = mode
        pending.extend(module._modules.values())


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run the block with ``model`` in eval mode; afterwards every module is in the mode the model
    itself was in before (``model.train(was_training)``), also when the block raises."""
    was_training = model.training
    set_train_mode(model, False)
    try:
        yield model
    finally:
        set_train_mode(model, was_training)
