"""DualPrompt (Wang et al., ECCV 2022) on the two towers of a frozen CLIP.

A shared **G-prompt** (general) is attached to the first ``g_depth`` blocks of each prompted tower
and a pool of task-specific **E-prompts** (expert, one per experience) to the next ``e_depth``
blocks, both by *prefix-tuning*: each prompt is a pair of ``P`` key and ``P`` value prefixes
prepended to that block's attention (:func:`~avalanche_exmask.models.prompt_injection.attention_prefixes`).
Each E-prompt has a learnable key. Training on experience ``t`` uses E-prompt ``t`` and pulls its
key towards the queries (loss ``1 - cos(query, key_t)``); at test time each sample takes the
E-prompt whose key is the most cosine-similar to its query among the experiences seen so far: no
task id.

**Two towers** (``towers``: both by default, or one; the other runs frozen and unprompted), and a
real choice of how an E-prompt is chosen (``selection``):

* ``"joint"`` (default): one key per experience, matched to the frozen model's fused embedding
  ``[B, F]`` (L2-normalised image and text embeddings concatenated, what the head sees); the chosen
  experience gives the E-prompts of both towers. An E-prompt is a task's expert, and a sample
  belongs to one task: its image and text should agree.
* ``"per_tower"``: each tower has its own keys, matched to its own frozen pooled feature
  (``[B, D]``, as in single-tower DualPrompt); the towers may pick different experiences.

Avalanche has no DualPrompt; its ``LearningToPrompt`` pieces do not fit prefix-tuning (its
``Prompt`` prepends prompt *tokens* and ties the key width to the prompt width), so the pools here
are plain parameters.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.models.attention import block_attention_module
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.models.frozen_backbone import PromptedOutput, frozen_backbone_check, parameter_report
from avalanche_exmask.models.prompt_injection import attention_prefixes
from avalanche_exmask.models.towers import check_towers, pooled_features, towers_of

__all__ = ["DualPromptCLIP", "SELECTIONS"]

#: How E-prompts are chosen when both towers are prompted.
SELECTIONS = ("joint", "per_tower")


def _uniform(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape).uniform_(-1.0, 1.0))


class DualPromptCLIP(nn.Module):
    """A frozen :class:`~avalanche_exmask.models.classifier.MultimodalCLIPClassifier` with DualPrompt prefixes.

    :param backbone: the classifier, built with ``adapter="none"`` (its head is trained).
    :param n_tasks: E-prompts in the pool (at least the number of experiences).
    :param towers: the prompted towers, a subset of ``("image", "text")``.
    :param selection: one of :data:`SELECTIONS`.
    :param g_depth: blocks ``0 .. g_depth - 1`` of each tower get the G-prompt (0: none).
    :param e_depth: blocks ``g_depth .. g_depth + e_depth - 1`` get the E-prompts.
    :param g_length: key (and value) prefixes per block of the G-prompt.
    :param e_length: key (and value) prefixes per block of an E-prompt.
    """

    n_seen_tasks: torch.Tensor  # buffer, long scalar: experiences started so far

    def __init__(
        self,
        backbone: MultimodalCLIPClassifier,
        *,
        n_tasks: int,
        towers: Sequence[str] = ("image", "text"),
        selection: str = "joint",
        g_depth: int = 1,
        e_depth: int = 2,
        g_length: int = 5,
        e_length: int = 5,
    ) -> None:
        super().__init__()
        frozen_backbone_check(backbone)
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}; got {selection!r}")
        lowest = (
            ("n_tasks", n_tasks, 1), ("g_depth", g_depth, 0), ("e_depth", e_depth, 1), ("g_length", g_length, 1), ("e_length", e_length, 1)
        )
        for name, value, low in lowest:
            if value < low:
                raise ValueError(f"{name} must be >= {low}; got {value}")
        self.backbone = backbone
        self.towers = check_towers(towers)
        self.selection = selection
        self.g_depth, self.e_depth = g_depth, e_depth
        all_towers = towers_of(backbone.clip)
        for name in self.towers:
            if g_depth + e_depth > all_towers[name].depth:
                raise ValueError(
                    f"g_depth + e_depth = {g_depth + e_depth} exceeds the {all_towers[name].depth} blocks of the {name} tower"
                )
        # [depth, 2 (key, value), P, D] per tower; E-prompts with a leading task dimension.
        self.g_prompts = nn.ParameterDict(
            {name: _uniform(g_depth, 2, g_length, all_towers[name].width) for name in self.towers if g_depth}
        )
        self.e_prompts = nn.ParameterDict(
            {name: _uniform(n_tasks, e_depth, 2, e_length, all_towers[name].width) for name in self.towers}
        )
        key_widths = {"joint": int(backbone.fused_dim)} if selection == "joint" else {name: all_towers[name].width for name in self.towers}
        self.keys = nn.ParameterDict({name: _uniform(n_tasks, width) for name, width in key_widths.items()})
        self.register_buffer("n_seen_tasks", torch.zeros((), dtype=torch.long))

    @property
    def n_tasks(self) -> int:
        """Size of the E-prompt pool."""
        return next(iter(self.keys.values())).shape[0]

    def start_task(self, task: int) -> None:
        """Mark experience ``task`` as seen (its E-prompt joins the test-time candidates).

        :raises ValueError: if the pool has no E-prompt ``task``.
        """
        if not 0 <= task < self.n_tasks:
            raise ValueError(f"experience {task} has no E-prompt: the pool holds {self.n_tasks} (n_tasks)")
        self.n_seen_tasks.fill_(max(int(self.n_seen_tasks), task + 1))

    def forward_prompted(self, x: MultimodalSample, task: int | None = None) -> PromptedOutput:
        """Logits ``[B, C]`` with G-prompts and the E-prompts of ``task`` (training) or, when
        ``task`` is ``None``, of the best-matching seen experience per sample."""
        with torch.no_grad():
            queries, fused = pooled_features(self.backbone, x)
        queries = {"joint": fused, **queries}
        batch = x.input_ids.shape[0]
        similarity = torch.zeros((), device=x.image.device)
        chosen: dict[str, torch.Tensor] = {}
        for name, keys in self.keys.items():
            cosine = F.normalize(queries[name], dim=-1) @ F.normalize(keys, dim=-1).T  # [B, n_tasks]
            if task is None:
                seen = max(1, int(self.n_seen_tasks))
                index = cosine[:, :seen].argmax(dim=-1)
            else:
                index = torch.full((batch,), int(task), dtype=torch.long, device=cosine.device)
            similarity = similarity + cosine.gather(1, index[:, None]).mean()
            chosen[name] = index
        towers = towers_of(self.backbone.clip)
        with contextlib.ExitStack() as stack:
            for name in self.towers:
                blocks = towers[name].transformer
                index = chosen["joint" if self.selection == "joint" else name]
                prefixes = []
                if name in self.g_prompts:
                    prefixes += [(b, self.g_prompts[name][b][:, None].expand(-1, batch, -1, -1)) for b in range(self.g_depth)]
                expert = self.e_prompts[name][index]  # [B, e_depth, 2, P, D]
                prefixes += [(self.g_depth + b, expert[:, b].transpose(0, 1)) for b in range(self.e_depth)]
                for block, key_value in prefixes:  # key_value: [2, B, P, D]
                    stack.enter_context(attention_prefixes(block_attention_module(blocks, block), key_value[0], key_value[1]))
            logits = self.backbone(x)
        return PromptedOutput(logits=logits, key_similarity=similarity, selected={k: v[:, None] for k, v in chosen.items()})

    def forward(self, x: MultimodalSample) -> torch.Tensor:
        """Logits ``[B, C]`` (E-prompts chosen by key matching; no task id)."""
        return self.forward_prompted(x).logits

    def trainable_parameter_report(self) -> dict[str, int]:
        """Parameter counts (elements): ``prompts`` (G, E and keys), ``head``, ``trainable``, ``total``."""
        prompts = sum(p.numel() for group in (self.g_prompts, self.e_prompts, self.keys) for p in group.parameters())
        return parameter_report(self, prompts=prompts)
