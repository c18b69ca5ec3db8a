"""EASE (Expandable Subspace Ensemble, Zhou et al., CVPR 2024) on the two towers of a frozen CLIP.

Each experience ``t`` trains its own lightweight adapter set on the frozen backbone: one
AdaptFormer-style bottleneck (``D -> r -> D``, ReLU, up-projection initialised to 0, output scaled
by ``s``) beside the MLP of every block of each adapted tower, added to the MLP's output (a forward
hook; the adapter reads the MLP's input, the block's normalised stream). Adapter set ``i`` defines a
feature *subspace*: the fused embedding ``[B, F]`` computed with it. While experience ``t`` is
trained, the head is trained on subspace ``t`` with the logits of other classes masked; adapters
``< t`` are frozen.

After experience ``t``, the prototypes (class means of the subspace features) of its classes are
computed in every subspace ``0..t`` from its training data. Old classes have no data, so their
prototype in the new subspace ``t`` is *completed* from the new classes' (semantic-guided
completion): ``P[o, t] = sum_n softmax_n(cos(P[o, j], P[n, j]) / tau) P[n, t]``, with the
similarity measured in subspace ``j``, the one old class ``o`` was learnt in, where both prototypes
come from data. Prediction: per class, the weighted mean over the trained subspaces of
``cos(feature_i, P[c, i])``, with weight 1 for prototypes from data and ``completed_weight`` for
completed ones (EASE's down-weighting of the synthesised subspaces). No task id: every sample is
embedded in every subspace (one backbone pass per trained adapter set at test time).

**Two towers** (``towers``: both by default, or one): an adapter set holds the bottlenecks of the
adapted towers; a tower without adapters gives the same embedding in every subspace.

Avalanche has no EASE; nothing of ``LearningToPrompt`` applies (no prompts, no keys). The adapter
sets and prototype tables are allocated for ``n_tasks`` experiences and ``n_classes`` classes up
front, so a model's ``state_dict`` (and a checkpoint) has the same keys at every experience.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.models.frozen_backbone import frozen_backbone_check, parameter_report
from avalanche_exmask.models.towers import check_towers, towers_of

__all__ = ["BottleneckAdapter", "EASECLIP"]

#: ``prototype_source`` values.
UNKNOWN, FROM_DATA, COMPLETED = 0, 1, 2


class BottleneckAdapter(nn.Module):
    """``x [..., D] -> scale * up(relu(down(x)))``, ``[..., D]``; zero at initialisation."""

    def __init__(self, width: int, bottleneck: int, scale: float) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(F.relu(self.down(x)))


class EASECLIP(nn.Module):
    """A frozen :class:`~avalanche_exmask.models.classifier.MultimodalCLIPClassifier` with one adapter
    set per experience and a prototype classifier.

    In training mode :meth:`forward` gives the head's logits on the current subspace (set by
    :meth:`start_task`); in eval mode, the prototype classifier's cosine scores ``[B, C]`` over the
    head's ``C`` classes (classes without a prototype: ``-inf``).

    :param backbone: the classifier, built with ``adapter="none"``.
    :param n_tasks: adapter sets (at least the number of experiences).
    :param n_classes: classes of the whole stream (rows of the prototype table).
    :param towers: the adapted towers, a subset of ``("image", "text")``.
    :param bottleneck: ``r``, the adapters' hidden width.
    :param scale: ``s``, the adapters' output scale (AdaptFormer / EASE: 0.1).
    :param temperature: ``tau`` of the prototype completion's softmax.
    :param completed_weight: weight of completed prototypes in the prediction (1: plain mean).
    """

    # Buffers (see __init__).
    prototypes: torch.Tensor
    prototype_source: torch.Tensor
    class_task: torch.Tensor
    current_task: torch.Tensor

    def __init__(
        self,
        backbone: MultimodalCLIPClassifier,
        *,
        n_tasks: int,
        n_classes: int,
        towers: Sequence[str] = ("image", "text"),
        bottleneck: int = 16,
        scale: float = 0.1,
        temperature: float = 0.1,
        completed_weight: float = 1.0,
    ) -> None:
        super().__init__()
        frozen_backbone_check(backbone)
        for name, value in (("n_tasks", n_tasks), ("n_classes", n_classes), ("bottleneck", bottleneck)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        if completed_weight < 0:
            raise ValueError(f"completed_weight must be >= 0; got {completed_weight}")
        self.backbone = backbone
        self.towers = check_towers(towers)
        self.temperature, self.completed_weight = temperature, completed_weight
        all_towers = towers_of(backbone.clip)
        self.adapters = nn.ModuleList(
            nn.ModuleDict(
                {
                    name: nn.ModuleList(BottleneckAdapter(all_towers[name].width, bottleneck, scale) for _ in all_towers[name].blocks)
                    for name in self.towers
                }
            )
            for _ in range(n_tasks)
        )
        self.adapters.requires_grad_(False)
        fused = int(backbone.fused_dim)
        self.register_buffer("prototypes", torch.zeros(n_classes, n_tasks, fused))  # [C, T, F]
        self.register_buffer("prototype_source", torch.zeros(n_classes, n_tasks, dtype=torch.int8))  # UNKNOWN / FROM_DATA / COMPLETED
        self.register_buffer("class_task", torch.full((n_classes,), -1, dtype=torch.long))  # experience of each class
        self.register_buffer("current_task", torch.zeros((), dtype=torch.long))

    @property
    def n_tasks(self) -> int:
        """Adapter sets allocated."""
        return len(self.adapters)

    def start_task(self, task: int) -> None:
        """Train adapter set ``task`` from now on; freeze the others.

        :raises ValueError: if there is no adapter set ``task``.
        """
        if not 0 <= task < self.n_tasks:
            raise ValueError(f"experience {task} has no adapter set: the model holds {self.n_tasks} (n_tasks)")
        self.adapters.requires_grad_(False)
        self.adapters[task].requires_grad_(True)
        self.current_task.fill_(task)

    @contextlib.contextmanager
    def subspace(self, task: int) -> Iterator[None]:
        """While active, the backbone runs with adapter set ``task`` beside its MLPs."""
        towers = towers_of(self.backbone.clip)
        handles = []
        try:
            task_adapters = self.adapters[task]
            assert isinstance(task_adapters, nn.ModuleDict)  # built so in __init__
            for name, adapters in task_adapters.items():
                assert isinstance(adapters, nn.ModuleList)  # built so in __init__
                for block, adapter in zip(towers[name].blocks, adapters, strict=True):
                    mlp = block.mlp
                    if not isinstance(mlp, nn.Module):
                        raise TypeError(f"EASE adapts each block's mlp module; {type(block).__name__}.mlp is a {type(mlp).__name__}")
                    handles.append(mlp.register_forward_hook(lambda _m, inputs, out, a=adapter: out + a(inputs[0])))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def embed_in(self, x: MultimodalSample, task: int) -> torch.Tensor:
        """Fused embedding ``[B, F]`` in subspace ``task``."""
        with self.subspace(task):
            return self.backbone.embed(x)

    def forward(self, x: MultimodalSample) -> torch.Tensor:
        """Training: head logits ``[B, C]`` on the current subspace. Eval: prototype scores ``[B, C]``."""
        if self.training:
            return self.backbone.classifier(self.embed_in(x, int(self.current_task)))
        return self.prototype_scores(x)

    def prototype_scores(self, x: MultimodalSample) -> torch.Tensor:
        """Cosine scores ``[B, C]`` against the prototypes of every trained subspace (no task id)."""
        n_classes = int(self.backbone.classifier.classifier.out_features)
        source = self.prototype_source[:n_classes, : int(self.current_task) + 1]  # [C, S]
        weight = (source == FROM_DATA).float() + self.completed_weight * (source == COMPLETED).float()
        scores = torch.zeros(x.input_ids.shape[0], n_classes, device=self.prototypes.device)
        for task in range(source.shape[1]):
            if not bool((source[:, task] != UNKNOWN).any()):
                continue
            features = F.normalize(self.embed_in(x, task), dim=-1)  # [B, F]
            prototypes = F.normalize(self.prototypes[:n_classes, task], dim=-1)  # [C, F]
            scores = scores + (features @ prototypes.T) * weight[:, task]
        total = weight.sum(dim=1)
        return torch.where(total > 0, scores / total.clamp(min=1e-12), torch.full_like(scores, float("-inf")))

    @torch.no_grad()
    def update_prototypes(self, batches: Iterable[tuple[MultimodalSample, torch.Tensor]], task: int) -> None:
        """After experience ``task``: its classes' prototypes in subspaces ``0..task`` from its
        training ``batches`` (``(x, labels [B])``), then the old classes' completed prototypes in
        subspace ``task``."""
        was_training = self.training
        self.eval()
        sums = torch.zeros_like(self.prototypes[:, : task + 1])  # [C, task + 1, F]
        counts = torch.zeros(self.prototypes.shape[0], device=self.prototypes.device)
        for x, labels in batches:
            labels = labels.to(self.prototypes.device)
            for subspace in range(task + 1):
                sums[:, subspace].index_add_(0, labels, self.embed_in(x, subspace).float())
            counts.index_add_(0, labels, torch.ones_like(labels, dtype=counts.dtype))
        new = torch.nonzero(counts > 0).flatten()
        self.prototypes[new, : task + 1] = sums[new] / counts[new, None, None]
        self.prototype_source[new, : task + 1] = FROM_DATA
        self.class_task[new] = task
        old = torch.nonzero((self.class_task >= 0) & (self.class_task < task)).flatten()
        for old_class in old.tolist():
            learnt_in = int(self.class_task[old_class])
            similarity = F.normalize(self.prototypes[new, learnt_in], dim=-1) @ F.normalize(self.prototypes[old_class, learnt_in], dim=-1)
            weights = (similarity / self.temperature).softmax(dim=0)  # [N_new]
            self.prototypes[old_class, task] = weights @ self.prototypes[new, task]
            self.prototype_source[old_class, task] = COMPLETED
        self.train(was_training)

    def trainable_parameter_report(self) -> dict[str, int]:
        """Parameter counts (elements): ``adapters_per_task`` (one adapter set), ``adapters``
        (all ``n_tasks`` sets), ``head``, ``trainable`` (now), ``total``."""
        return parameter_report(
            self,
            adapters_per_task=sum(p.numel() for p in self.adapters[0].parameters()),
            adapters=sum(p.numel() for p in self.adapters.parameters()),
        )
