"""Prompt tokens and attention prefixes inside open_clip's towers, without changing open_clip.

open_clip 3.3 builds each tower's token sequence inside its ``forward`` and calls
``nn.MultiheadAttention(q, k, v, need_weights=False, attn_mask=...)`` in every block (see
:mod:`avalanche_exmask.models.attention`). Two hooks give the prompt methods what they need:

* :func:`prompt_tokens` (L2P's prompts): a forward pre-hook on a tower's ``Transformer`` inserts
  ``P`` prompt tokens into its input ``[B, L, D]`` at the tower's prompt position and widens the
  attention mask (every token may attend to the prompts; prompts attend to prompts only, which is
  what a causal text mask gives tokens placed first); a forward hook takes them out of the output,
  so pooling, projection and :meth:`MultimodalCLIPClassifier.masking_scores` see ``L`` tokens as
  before.
* :func:`attention_prefixes` (DualPrompt's prefix-tuning): a forward pre-hook on one block's
  ``nn.MultiheadAttention`` prepends ``P`` prefix vectors to its key and value inputs (queries are
  unchanged, so the output keeps ``L`` tokens) and widens the mask by ``P`` columns of zeros. The
  prefixes live in the block's (normalised) input space and pass through the frozen key / value
  projections: ``K = W_k [p_k; x] + b_k``. For a full-rank ``W_k`` this spans every key prefix,
  so it is prefix-tuning reparametrised through the projection (no re-implementation of the
  attention).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["prompt_tokens", "attention_prefixes", "widen_attention_mask"]


def widen_attention_mask(mask: torch.Tensor | None, n_prompts: int, position: int, *, rows: bool) -> torch.Tensor | None:
    """An attention mask for a sequence with ``n_prompts`` extra keys (and, if ``rows``, queries).

    :param mask: ``None``, or an additive float / boolean mask ``[L, S]`` or ``[B * H, L, S]``.
    :param position: index of the first inserted key (and query).
    :param rows: the prompts are queries too (prompt tokens) rather than keys only (prefixes).
    :return: ``[L', S + P]`` (``L' = L + P`` if ``rows`` else ``L``): zeros (visible) in the new key
        columns; the new query rows see the prompts and nothing else; ``None`` if ``mask`` is.
    """
    if mask is None:
        return None
    blocked = True if mask.dtype == torch.bool else float("-inf")
    visible = False if mask.dtype == torch.bool else 0.0
    columns = mask.new_full((*mask.shape[:-1], n_prompts), visible)
    widened = torch.cat([mask[..., :position], columns, mask[..., position:]], dim=-1)
    if not rows:
        return widened
    prompt_rows = widened.new_full((*mask.shape[:-2], n_prompts, widened.shape[-1]), blocked)
    prompt_rows[..., position : position + n_prompts] = visible
    return torch.cat([widened[..., :position, :], prompt_rows, widened[..., position:, :]], dim=-2)


@contextlib.contextmanager
def prompt_tokens(transformer: nn.Module, prompts: torch.Tensor, position: int) -> Iterator[None]:
    """While active, ``transformer`` runs on its input with ``prompts`` inserted at ``position``.

    :param transformer: an open_clip ``Transformer`` (input and output ``[B, L, D]``).
    :param prompts: ``[B, P, D]``.
    :param position: index of the first prompt token in the sequence.
    """
    n_prompts = prompts.shape[1]

    def insert(_module, args, kwargs):
        x = args[0]
        x = torch.cat([x[:, :position], prompts.to(x.dtype), x[:, position:]], dim=1)
        mask = args[1] if len(args) > 1 else kwargs.get("attn_mask")
        kwargs = {**kwargs, "attn_mask": widen_attention_mask(mask, n_prompts, position, rows=True)}
        return (x,), kwargs

    def remove(_module, _args, _kwargs, output):
        return torch.cat([output[:, :position], output[:, position + n_prompts :]], dim=1)

    handles = [
        transformer.register_forward_pre_hook(insert, with_kwargs=True),
        transformer.register_forward_hook(remove, with_kwargs=True),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def attention_prefixes(attn: nn.MultiheadAttention, key_prefix: torch.Tensor, value_prefix: torch.Tensor) -> Iterator[None]:
    """While active, ``attn`` attends to ``key_prefix`` / ``value_prefix`` before its own keys / values.

    :param attn: a block's ``nn.MultiheadAttention`` (open_clip calls it as ``attn(q, k, v, ...)``).
    :param key_prefix: ``[B, P, D]``, input-space vectors prepended to the key input.
    :param value_prefix: ``[B, P, D]``, prepended to the value input.
    """
    if not isinstance(attn, nn.MultiheadAttention):
        raise TypeError(f"attention_prefixes needs nn.MultiheadAttention; got {type(attn).__name__}")
    n_prefix = key_prefix.shape[1]

    def prepend(module, args, kwargs):
        query = args[0] if args else kwargs.pop("query")
        key = args[1] if len(args) > 1 else kwargs.pop("key", query)
        value = args[2] if len(args) > 2 else kwargs.pop("value", key)
        key_p, value_p = key_prefix.to(key.dtype), value_prefix.to(value.dtype)
        if not module.batch_first:  # [L, B, D]
            key_p, value_p = key_p.transpose(0, 1), value_p.transpose(0, 1)
        dim = 1 if module.batch_first else 0
        key, value = torch.cat([key_p, key], dim=dim), torch.cat([value_p, value], dim=dim)
        kwargs = dict(kwargs)
        kwargs["attn_mask"] = widen_attention_mask(kwargs.get("attn_mask"), n_prefix, 0, rows=False)
        return (query, key, value), kwargs

    handle = attn.register_forward_pre_hook(prepend, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
