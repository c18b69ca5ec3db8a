"""Text mask: which tokens of an exemplar's text are stored.

Token conventions (open_clip BPE): ``input_ids`` is ``long [T]`` padded with 0; the start token
(49406) is the first real token and the end token (49407, the largest id) is where CLIP pools, at
the argmax. *Real* tokens are the non-zero ones; *content* tokens are the real tokens other than
the start and end tokens. Start and end tokens are always kept, padding never; order is kept
because the result is a mask over positions.

A content token is kept when it is

* **class-related**, by one of two sources (``class_source``):

  - ``"names"``: the token is one of the exemplar's class-name tokens (the generators know every
    class's name; :func:`class_name_token_ids` tokenises them). Every occurrence of a class word
    survives. CLIP pools at the end-of-text token and its attention does not mark the class words
    (measured: the attention rule keeps about 72% of them on the embedded benchmark), so this is
    the default wherever class names are known;
  - ``"attention"`` (the paper's rule): high attention from the pooled (end) token in the text
    tower's last block, ``>= class_tau x`` the mean over the content tokens
    (``class_kind="threshold"``) or among the top ``class_ratio`` of them (``class_kind="ratio"``).
    The start and end tokens are left out of the mean: they are kept anyway, and the start token is
    an attention sink that would inflate it;
* **contextual**, by one of two sources (``context_source``), among the top ``context_ratio`` of
  the content tokens (``context_kind="ratio"``) or above ``context_threshold``
  (``context_kind="threshold"``):

  - ``"patches"``: a proxy for the paper's cross-modal attention (CLIP has none): the maximum
    cosine similarity between the token's projected feature and the projected features of the
    *discarded* patches (an absolute cosine for the threshold). When the image mask discards no
    patch there is no removed context and no token is contextual. Measured on the embedded
    benchmark, this proxy picks scene words at chance rate;
  - ``"text_embedding"``: the token's leave-one-out importance to the text embedding
    (``MaskingScores.token_importance``, ``1 - cos``), so the stored text stays close to the
    original in the model's embedding space (the threshold is then on the importance).

A text with no content tokens keeps its start and end tokens only.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch

from avalanche_exmask.masking.ranking import top_fraction
from avalanche_exmask.models.outputs import MaskingScores

__all__ = [
    "class_name_token_ids",
    "real_token_mask",
    "special_token_mask",
    "class_token_mask",
    "context_similarity",
    "context_token_mask",
    "importance_token_mask",
    "TextMaskRule",
]


def real_token_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """Bool ``[..., T]``: the non-padding tokens (id != 0)."""
    return input_ids != 0


def special_token_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """Bool ``[..., T]``: the start token (first real token) and the end token (argmax id).

    An all-padding row has no special token.
    """
    real = real_token_mask(input_ids)
    special = torch.zeros_like(real)
    special.scatter_(-1, real.long().argmax(dim=-1, keepdim=True), True)
    special.scatter_(-1, input_ids.argmax(dim=-1, keepdim=True), True)
    return special & real


def class_name_token_ids(
    class_names: Mapping[int, str] | Sequence[str], tokenize: Callable[[list[str]], torch.Tensor]
) -> dict[int, torch.Tensor]:
    """The content token ids of every class name, for ``TextMaskRule(class_source="names")``.

    :param class_names: label -> name (a sequence is indexed by label).
    :param tokenize: the model's tokenizer: ``list[str] -> long [n, T]``, zero-padded, with start
        and end tokens (open_clip's).
    :return: label -> long ``[K]``, the sorted unique content token ids of the name.
    """
    items = dict(enumerate(class_names)) if isinstance(class_names, Sequence) else dict(class_names)
    labels = list(items)
    ids = tokenize([items[label] for label in labels])
    content = real_token_mask(ids) & ~special_token_mask(ids)
    return {label: torch.unique(ids[row][content[row]]) for row, label in enumerate(labels)}


def class_name_token_mask(input_ids: torch.Tensor, class_token_ids: torch.Tensor) -> torch.Tensor:
    """Content tokens that are words of the class name.

    :param input_ids: long ``[..., T]``.
    :param class_token_ids: long ``[K]``, see :func:`class_name_token_ids`.
    :return: bool ``[..., T]``, a subset of the content tokens.
    """
    content = real_token_mask(input_ids) & ~special_token_mask(input_ids)
    return content & torch.isin(input_ids, class_token_ids)


def class_token_mask(
    input_ids: torch.Tensor,
    token_attention: torch.Tensor,
    *,
    kind: Literal["threshold", "ratio"] = "threshold",
    tau: float = 1.0,
    ratio: float = 0.3,
) -> torch.Tensor:
    """Content tokens with high pooled-token attention.

    :param input_ids: long ``[..., T]``.
    :param token_attention: float ``[..., T]``, pooled token -> token attention.
    :param kind: ``"threshold"``: attention ``>= tau x`` mean over content tokens;
        ``"ratio"``: the top ``ceil(ratio x n_content)`` content tokens.
    :return: bool ``[..., T]``, a subset of the content tokens.
    """
    content = real_token_mask(input_ids) & ~special_token_mask(input_ids)
    if kind == "ratio":
        return top_fraction(token_attention, content, ratio)
    n_content = content.sum(dim=-1, keepdim=True).clamp(min=1)
    mean = (token_attention * content).sum(dim=-1, keepdim=True) / n_content
    return content & (token_attention >= tau * mean * (1 - 1e-6))


def context_similarity(
    token_features: torch.Tensor, patch_features: torch.Tensor, patch_keep: torch.Tensor
) -> torch.Tensor:
    """Per token, the maximum cosine similarity to the discarded patches.

    :param token_features: float ``[..., T, E]``.
    :param patch_features: float ``[..., N, E]``.
    :param patch_keep: bool ``[..., N]``, the image mask (``False`` = discarded).
    :return: float ``[..., T]``; ``-inf`` where no patch is discarded.
    """
    tokens = torch.nn.functional.normalize(token_features.float(), dim=-1)
    patches = torch.nn.functional.normalize(patch_features.float(), dim=-1)
    similarity = tokens @ patches.transpose(-1, -2)
    similarity = similarity.masked_fill(patch_keep.unsqueeze(-2), -math.inf)
    return similarity.amax(dim=-1)


def importance_token_mask(
    input_ids: torch.Tensor,
    importance: torch.Tensor,
    *,
    kind: Literal["ratio", "threshold"] = "ratio",
    ratio: float = 0.2,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Content tokens with the highest leave-one-out importance to the text embedding.

    :param importance: float ``[..., T]`` (see ``MaskingScores.token_importance``).
    :return: bool ``[..., T]``, a subset of the content tokens.
    """
    content = real_token_mask(input_ids) & ~special_token_mask(input_ids)
    if kind == "ratio":
        return top_fraction(importance, content, ratio)
    return content & (importance >= threshold)


def context_token_mask(
    input_ids: torch.Tensor,
    token_features: torch.Tensor,
    patch_features: torch.Tensor,
    patch_keep: torch.Tensor,
    *,
    kind: Literal["ratio", "threshold"] = "ratio",
    ratio: float = 0.2,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Content tokens most similar to the discarded image region (see module docstring).

    :param kind: ``"ratio"``: top ``ceil(ratio x n_content)`` content tokens by similarity;
        ``"threshold"``: similarity ``>= threshold`` (cosine, in ``[-1, 1]``).
    :return: bool ``[..., T]``, a subset of the content tokens; empty when no patch is discarded.
    """
    content = real_token_mask(input_ids) & ~special_token_mask(input_ids)
    content = content & ~patch_keep.all(dim=-1, keepdim=True)
    similarity = context_similarity(token_features, patch_features, patch_keep)
    if kind == "ratio":
        return top_fraction(similarity, content, ratio)
    return content & (similarity >= threshold)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextMaskRule:
    """A named text-masking rule (see the module docstring for the criteria).

    :param mode: ``"both"`` (class-related or contextual), ``"class"``, ``"context"``, or
        ``"none"`` (no text mask: every real token kept; for ablations).
    :param class_source: ``"names"`` (the class-name tokens; the rule is then called with the
        exemplar's ``class_token_ids``) or ``"attention"`` (the paper's pooled-token attention).
    :param class_kind: ``"threshold"`` or ``"ratio"`` for the class-related criterion.
    :param class_tau: multiple of the mean content-token attention, ``>= 0``.
    :param class_ratio: fraction of content tokens, in ``[0, 1]``.
    :param context_source: ``"patches"`` (similarity to the discarded patches) or
        ``"text_embedding"`` (leave-one-out importance; the scores must carry ``token_importance``).
    :param context_kind: ``"ratio"`` or ``"threshold"`` for the contextual criterion.
    :param context_ratio: fraction of content tokens, in ``[0, 1]``.
    :param context_threshold: cosine similarity, in ``[-1, 1]``.
    """

    mode: Literal["both", "class", "context", "none"] = "both"
    class_source: Literal["names", "attention"] = "names"
    class_kind: Literal["threshold", "ratio"] = "threshold"
    class_tau: float = 1.0
    class_ratio: float = 0.3
    context_source: Literal["patches", "text_embedding"] = "patches"
    context_kind: Literal["ratio", "threshold"] = "ratio"
    context_ratio: float = 0.2
    context_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in ("both", "class", "context", "none"):
            raise ValueError(f"TextMaskRule.mode must be 'both', 'class', 'context' or 'none'; got {self.mode!r}")
        if self.context_source not in ("patches", "text_embedding"):
            raise ValueError(f"TextMaskRule.context_source must be 'patches' or 'text_embedding'; got {self.context_source!r}")
        if self.class_source not in ("names", "attention"):
            raise ValueError(f"TextMaskRule.class_source must be 'names' or 'attention'; got {self.class_source!r}")
        for name in ("class_kind", "context_kind"):
            if getattr(self, name) not in ("threshold", "ratio"):
                raise ValueError(f"TextMaskRule.{name} must be 'threshold' or 'ratio'; got {getattr(self, name)!r}")
        if not self.class_tau >= 0:
            raise ValueError(f"TextMaskRule.class_tau must be >= 0; got {self.class_tau}")
        for name in ("class_ratio", "context_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"TextMaskRule.{name} must be in [0, 1]; got {getattr(self, name)}")
        if not -1 <= self.context_threshold <= 1:
            raise ValueError(f"TextMaskRule.context_threshold must be in [-1, 1]; got {self.context_threshold}")

    @property
    def reads_scores(self) -> bool:
        """Whether the rule reads the scores at all (no for ``"none"`` and for class-name tokens alone)."""
        return self.mode != "none" and not (self.mode == "class" and self.class_source == "names")

    @property
    def needs_token_importance(self) -> bool:
        """Whether the scores must carry ``token_importance``."""
        return self.mode in ("both", "context") and self.context_source == "text_embedding"

    @property
    def needs_class_names(self) -> bool:
        """Whether calls must pass ``class_token_ids``."""
        return self.mode in ("both", "class") and self.class_source == "names"

    def __call__(
        self,
        input_ids: torch.Tensor,
        scores: MaskingScores,
        patch_keep: torch.Tensor,
        class_token_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Bool keep-mask over token positions.

        :param input_ids: long ``[T]`` (or ``[B, T]``, all of one class), zero-padded.
        :param scores: the sample's (or batch's) :class:`MaskingScores`.
        :param patch_keep: bool ``[N]`` (or ``[B, N]``), the image mask of the same sample.
        :param class_token_ids: long ``[K]``, the class-name token ids of the sample's class
            (:func:`class_name_token_ids`); required when :attr:`needs_class_names`.
        :return: bool ``[T]`` (or ``[B, T]``): special tokens plus the selected content tokens.
        :raises ValueError: if the class-name tokens are needed and missing.
        """
        real = real_token_mask(input_ids)
        if self.mode == "none":
            return real
        keep = special_token_mask(input_ids)
        if self.mode in ("both", "class"):
            if self.class_source == "attention":
                keep |= class_token_mask(
                    input_ids, scores.token_attention, kind=self.class_kind, tau=self.class_tau, ratio=self.class_ratio
                )
            elif class_token_ids is None:
                raise ValueError(
                    "TextMaskRule(class_source='names') needs the class-name token ids of the sample's class; "
                    "give the codec class names (MaskedCodec(class_token_ids=...)) or use class_source='attention'"
                )
            else:
                keep |= class_name_token_mask(input_ids, class_token_ids)
        if self.mode in ("both", "context") and self.context_source == "text_embedding":
            if scores.token_importance is None:
                raise ValueError("TextMaskRule(context_source='text_embedding') needs scores with token_importance")
            keep |= importance_token_mask(
                input_ids, scores.token_importance, kind=self.context_kind, ratio=self.context_ratio,
                threshold=self.context_threshold,
            )
        elif self.mode in ("both", "context"):
            keep |= context_token_mask(
                input_ids,
                scores.token_features,
                scores.patch_features,
                patch_keep,
                kind=self.context_kind,
                ratio=self.context_ratio,
                threshold=self.context_threshold,
            )
        return keep & real
