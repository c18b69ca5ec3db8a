"""GPU settings of a :class:`~avalanche_exmask.models.classifier.MultimodalCLIPClassifier`:
channels-last memory format and ``torch.compile``; both change speed, not results.

* Channels-last only concerns 4-D tensors: in an open_clip ViT, the patch embedding's
  convolution (``visual.conv1``) and its input. Everything after it is ``[B, L, D]`` tokens.
* ``torch.compile`` is applied to each transformer block's MLP, in both towers, where about two
  thirds of a ViT's FLOPs are spent. The attention stays as open_clip calls it
  (``nn.MultiheadAttention``, PyTorch's fused scaled-dot-product kernels), because this package
  hooks it at run time (attention capture for masking, the empty-patch masks, token dropping), and
  hooks added after compilation would make a compiled block recompile or fall back. The MLPs'
  SSF parametrizations are traced with them. Token dropping changes the sequence length from batch
  to batch, so MLPs are compiled with ``dynamic=True``.
* ``torch.nn.utils.parametrize`` gives every adapted layer a class of its own, so dynamo compiles
  one graph per MLP (and per grad mode) under one code object; :func:`compile_mlps` raises
  dynamo's ``recompile_limit`` (default 8) to ``4 x`` the number of MLPs so that none falls back
  to eager.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["use_channels_last", "compile_mlps", "transformer_mlps"]


def use_channels_last(model: nn.Module) -> int:
    """Put every ``nn.Conv2d`` of ``model`` (weights and inputs) in channels-last format.

    :return: the number of convolutions changed (1 for an open_clip ViT).
    """
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convolutions:
        conv.to(memory_format=torch.channels_last)
        conv.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(memory_format=torch.channels_last), *args[1:]))
    return len(convolutions)


def transformer_mlps(model: nn.Module) -> Iterator[nn.Module]:
    """The ``mlp`` module of every residual block of an open_clip model held by ``model``."""
    for module in model.modules():
        mlp = getattr(module, "mlp", None)
        if isinstance(mlp, nn.Module) and hasattr(module, "ln_2"):
            yield mlp


def compile_mlps(model: nn.Module, mode: str = "default", backend: str = "inductor") -> int:
    """``torch.compile`` each transformer block's MLP in place (``nn.Module.compile``).

    :param mode: ``torch.compile``'s mode (``"default"``, ``"reduce-overhead"``, ``"max-autotune"``).
    :param backend: ``torch.compile``'s backend (``"eager"`` traces without generating code, which
        checks that a model compiles without paying the code generation).
    :return: the number of MLPs compiled.
    """
    import torch._dynamo

    mlps = list(transformer_mlps(model))
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(mlps))
    options = {"backend": backend, "dynamic": True}
    if backend == "inductor":
        options["mode"] = mode
    for mlp in mlps:
        mlp.compile(**options)
    return len(mlps)
