"""Capture attention probabilities of an open_clip transformer block.

open_clip 3.3 calls ``nn.MultiheadAttention`` with ``need_weights=False`` (so PyTorch can use
its fused kernels), which returns no attention weights. :class:`AttentionRecorder` recovers them
without changing the forward pass: a forward pre-hook on the attention module receives the
exact query/key inputs and mask of the call and recomputes
``softmax(Q K^T / sqrt(d_head) + mask)`` from the module's (possibly adapted) in-projection.
The extra cost is one ``[B, H, L, L]`` product for the recorded block only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["AttentionRecorder", "attention_probabilities", "attention_rollout", "block_attention_module"]


def attention_probabilities(
    attn: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention probabilities of ``attn`` for one call, averaged over heads.

    :param attn: a self-attention ``nn.MultiheadAttention`` with a fused ``in_proj_weight``.
    :param query: ``[B, L, D]`` (``[L, B, D]`` if ``attn.batch_first`` is False).
    :param key: same layout, ``[B, S, D]``.
    :param attn_mask: ``None``, an additive float mask or a boolean mask (True = masked),
        ``[L, S]`` or ``[B * H, L, S]``.
    :return: ``[B, L, S]`` float: row ``i`` is the attention distribution of token ``i``.
    """
    if not attn.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    batch, length, width = query.shape
    heads = attn.num_heads
    head_dim = width // heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    q = F.linear(query, weight[:width], None if bias is None else bias[:width])
    k = F.linear(key, weight[width : 2 * width], None if bias is None else bias[width : 2 * width])
    q = q.view(batch, length, heads, head_dim).transpose(1, 2)
    k = k.view(batch, key.shape[1], heads, head_dim).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(head_dim)  # [B, H, L, S]
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=logits.dtype).masked_fill(attn_mask, float("-inf"))
        if attn_mask.ndim == 3:
            attn_mask = attn_mask.view(batch, heads, length, -1)
        logits = logits + attn_mask.to(logits.dtype)
    return logits.softmax(dim=-1).mean(dim=1)


class AttentionRecorder:
    """Context manager recording the head-averaged attention of one ``nn.MultiheadAttention``.

    Example::

        with AttentionRecorder(block_attention_module(clip.visual.transformer, -1)) as recorder:
            clip.encode_image(images)
        recorder.probabilities  # [B, 1 + N, 1 + N]
    """

    def __init__(self, attn: nn.MultiheadAttention) -> None:
        if not isinstance(attn, nn.MultiheadAttention):
            raise TypeError(f"AttentionRecorder needs nn.MultiheadAttention; got {type(attn).__name__}")
        self.attn = attn
        self.probabilities: torch.Tensor | None = None
        self._handle: RemovableHandle | None = None

    def _hook(self, module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> None:
        query = args[0] if args else kwargs["query"]
        key = args[1] if len(args) > 1 else kwargs.get("key", query)
        self.probabilities = attention_probabilities(module, query, key, kwargs.get("attn_mask"))

    def __enter__(self) -> AttentionRecorder:
        self.probabilities = None
        self._handle = self.attn.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def recorded(self) -> torch.Tensor:
        """:attr:`probabilities` of the module's last forward pass inside the context.

        :raises RuntimeError: if the module has not run inside the context.
        """
        if self.probabilities is None:
            raise RuntimeError("AttentionRecorder: the attention module has not run inside the context")
        return self.probabilities

    def __exit__(self, *exc) -> None:
        assert self._handle is not None  # set by __enter__
        self._handle.remove()
        self._handle = None


def attention_rollout(probabilities: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) through a stack of blocks.

    Each block's head-averaged attention ``A`` is mixed with the residual path,
    ``0.5 A + 0.5 I`` (rows renormalised), and the blocks are multiplied from first to last.

    :param probabilities: per block, ``[B, L, L]`` attention, first block first.
    :return: ``[B, L, L]``: row ``i`` is how much each input token flows into output token ``i``.
    """
    rollout = None
    for attention in probabilities:
        eye = torch.eye(attention.shape[-1], dtype=attention.dtype, device=attention.device)
        mixed = 0.5 * attention + 0.5 * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    if rollout is None:
        raise ValueError("attention_rollout needs at least one block")
    return rollout


def block_attention_module(transformer: nn.Module, index: int = -1) -> nn.MultiheadAttention:
    """The ``nn.MultiheadAttention`` of residual block ``index`` of an open_clip ``Transformer``.

    :raises TypeError: if ``transformer.resblocks`` is not an ``nn.ModuleList`` (open_clip's is).
    :raises NotImplementedError: for block types without ``nn.MultiheadAttention`` (e.g.
        open_clip's ``CustomResidualAttentionBlock``), naming the type.
    """
    blocks = transformer.resblocks
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"expected an open_clip Transformer, whose resblocks is an nn.ModuleList; got {type(blocks).__name__}")
    block = blocks[index]
    attn = getattr(block, "attn", None)
    if isinstance(attn, nn.MultiheadAttention):
        return attn
    # peft's LoRA wraps nn.MultiheadAttention; the wrapped module is its base layer.
    base = getattr(attn, "base_layer", None)
    if isinstance(base, nn.MultiheadAttention):
        return base
    raise NotImplementedError(
        f"attention capture supports blocks with nn.MultiheadAttention; got {type(block).__name__}"
        f" with attn of type {type(attn).__name__}"
    )
