"""L2P (Learning to Prompt, Wang et al., CVPR 2022) on the two towers of a frozen CLIP.

Each prompted tower has a pool of ``M`` prompts (``[M, P, D]``) with learnable keys (``[M, D]``).
A sample's *query* is the frozen tower's pooled feature before projection (its [CLS] / end-of-text
token: L2P's "frozen pre-trained model as query function"); the ``N`` prompts whose keys are the
most cosine-similar to it are inserted into the tower's token sequence (``N x P`` tokens, see
:func:`~avalanche_exmask.models.prompt_injection.prompt_tokens`). The key-matching (surrogate)
loss is ``-sum_k cos(query, key_k)`` over the chosen keys, averaged over the batch and summed over
towers. Selection needs no task id, at training or at test time.

**Two towers.** L2P was built for one ViT. Here each prompted tower has its own pool, keys and
query (``towers``: ``("image", "text")`` by default, or one of them; the other tower runs frozen
and unprompted). Separate pools are what Avalanche's ``Prompt`` supports (its keys live in the
prompt width ``D``, which differs between the towers) and let image and text choose prompts
independently.

**What is reused from Avalanche.** :class:`avalanche.models.Prompt` is used as is, one per tower:
the prompt pool, the keys, the top-``N`` cosine selection and the surrogate term (its
``reduce_sim``). Avalanche's ``LearningToPrompt`` strategy and its ``avalanche.models.vit`` model
cannot be reused: they build a timm ViT by name (``create_model``), insert the prompts inside
timm's ``VisionTransformer.forward_features`` and compute the query with a second timm model, so
they take no CLIP, no text tower and no ``MultimodalSample``. Their training rules (the surrogate
loss, logits of classes outside the current experience masked during training, a fresh optimizer
state per experience) are kept in :class:`avalanche_exmask.training.prompting.LearningToPromptCLIP`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from avalanche.models.prompt import Prompt
from torch import nn

from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.models.frozen_backbone import PromptedOutput, frozen_backbone_check, parameter_report
from avalanche_exmask.models.prompt_injection import prompt_tokens
from avalanche_exmask.models.towers import check_towers, pooled_features, towers_of

__all__ = ["L2PCLIP"]


class L2PCLIP(nn.Module):
    """A frozen :class:`~avalanche_exmask.models.classifier.MultimodalCLIPClassifier` with L2P prompt pools.

    :param backbone: the classifier, built with ``adapter="none"`` (its head is trained).
    :param towers: the prompted towers, a subset of ``("image", "text")``.
    :param pool_size: prompts per pool ``M`` (L2P: 10).
    :param prompt_length: tokens per prompt ``P`` (L2P: 5).
    :param top_k: prompts chosen per sample ``N`` (L2P: 5).
    :param prompt_init: ``"uniform"`` (U(-1, 1), L2P) or ``"zero"``, for prompts and keys.
    """

    def __init__(
        self,
        backbone: MultimodalCLIPClassifier,
        *,
        towers: Sequence[str] = ("image", "text"),
        pool_size: int = 10,
        prompt_length: int = 5,
        top_k: int = 5,
        prompt_init: str = "uniform",
    ) -> None:
        super().__init__()
        frozen_backbone_check(backbone)
        if not 1 <= top_k <= pool_size:
            raise ValueError(f"top_k must be in [1, pool_size={pool_size}]; got {top_k}")
        if prompt_length < 1:
            raise ValueError(f"prompt_length must be >= 1; got {prompt_length}")
        if prompt_init not in ("uniform", "zero"):
            raise ValueError(f"prompt_init must be 'uniform' or 'zero'; got {prompt_init!r}")
        self.backbone = backbone
        self.towers = check_towers(towers)
        widths = {name: tower.width for name, tower in towers_of(backbone.clip).items()}
        self.pools = nn.ModuleDict(
            {
                name: Prompt(
                    length=prompt_length, embed_dim=widths[name], embedding_key="cls", prompt_init=prompt_init,
                    prompt_pool=True, prompt_key=True, pool_size=pool_size, top_k=top_k, prompt_key_init=prompt_init,
                )
                for name in self.towers
            }
        )

    def forward_prompted(self, x: MultimodalSample) -> PromptedOutput:
        """Query (frozen, no gradient), choose prompts, run the prompted towers; logits ``[B, C]``."""
        with torch.no_grad():
            queries, _ = pooled_features(self.backbone, x)
        towers = towers_of(self.backbone.clip)
        similarity = torch.zeros((), device=x.image.device)
        selected = {}
        with contextlib.ExitStack() as stack:
            for name, pool in self.pools.items():
                tower = towers[name]
                # Avalanche's Prompt takes the token sequence only to prepend the prompts and for its
                # batch size; an empty [B, 0, D] sequence gives the chosen prompts alone.
                empty = queries[name].new_zeros(queries[name].shape[0], 0, tower.width)
                out = pool(empty, cls_features=queries[name])
                similarity = similarity + out["reduce_sim"]
                selected[name] = out["prompt_idx"]
                stack.enter_context(prompt_tokens(tower.transformer, out["prompted_embedding"], tower.prompt_position))
            logits = self.backbone(x)
        return PromptedOutput(logits=logits, key_similarity=similarity, selected=selected)

    def forward(self, x: MultimodalSample) -> torch.Tensor:
        """Logits ``[B, C]`` (prompts chosen by key matching; no task id)."""
        return self.forward_prompted(x).logits

    def trainable_parameter_report(self) -> dict[str, int]:
        """Parameter counts (elements): ``prompts`` (prompts and keys), ``head``, ``trainable``, ``total``."""
        return parameter_report(self, prompts=sum(p.numel() for p in self.pools.parameters()))
