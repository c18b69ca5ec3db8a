"""A byte-budgeted, class-balanced exemplar buffer, shared by every codec.

After each experience, :meth:`ByteBudgetBuffer.update` scores the candidates of the experience's
new classes with one eval forward pass (a *scorer*), orders each class's candidates (herding or
random), encodes them with the codec in that order and stores the compact records that fit in the
class's byte share. Replay decodes records lazily (:attr:`ByteBudgetBuffer.buffer`).

Accounting rules (all in bytes; a record's cost is :attr:`Record.nbytes`):

* ``mode="total"``: ``max_size`` is the whole budget; every seen class gets
  ``max_size // n_seen_classes``. When classes arrive, old classes shrink by evicting the tail of
  their selection order.
* ``mode="per_class"``: every class gets ``max_size // total_num_classes`` from the start.
* Within a share, records are taken in selection order and the class stops at the first record
  that does not fit (skipping it and taking smaller later ones would favour heavily masked
  exemplars over the herding order). Records that do not fit before any has been taken are
  skipped, so a class gets an exemplar whenever its share can hold any of its records.
* A share smaller than every record of a class raises :class:`ValueError` and leaves the buffer
  unchanged. Growing the budget (:meth:`ByteBudgetBuffer.resize`) adds no exemplar before the
  next update: candidates of past experiences are not kept.

The pieces the buffer uses live beside it: the scorer (:mod:`~avalanche_exmask.storage.scoring`),
the fitting rule (:mod:`~avalanche_exmask.storage.budget_fit`), the replay and candidate datasets
(:mod:`~avalanche_exmask.storage.buffer_datasets`) and the statistics
(:mod:`~avalanche_exmask.storage.buffer_stats`). The names of its interface (:data:`Scorer`,
:data:`Augmentation`, :func:`default_scorer`, :class:`ClassStats`, :class:`BufferStats`) are
importable from here too.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from avalanche.benchmarks.utils import _make_taskaware_classification_dataset
from avalanche.training.storage_policy import (
    ExemplarsBuffer,
    ExemplarsSelectionStrategy,
    FeatureBasedExemplarsSelectionStrategy,
)

from avalanche_exmask.distributed import batch_shard, gather_shards, is_distributed, rank_aligned_rng, unwrap_model
from avalanche_exmask.models.outputs import MaskingScores
from avalanche_exmask.storage.budget_fit import fit_to_budget, record_sizes
from avalanche_exmask.storage.buffer_datasets import Augmentation, ListDataset, RecordDataset
from avalanche_exmask.storage.buffer_stats import BufferStats, ClassStats, mean_of
from avalanche_exmask.storage.candidate_reader import CandidateReader
from avalanche_exmask.storage.codecs.base import Codec, Record
from avalanche_exmask.storage.codecs.masked import MaskedCodec
from avalanche_exmask.storage.scoring import Scorer, default_scorer, token_importance
from avalanche_exmask.storage.selection import herding_order, random_order

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "Scorer",
    "Augmentation",
    "default_scorer",
    "ClassStats",
    "BufferStats",
    "ByteBudgetBuffer",
    "MaskedExemplarBuffer",
]


class ByteBudgetBuffer(ExemplarsBuffer):
    """Class-balanced exemplar buffer under a budget in bytes (see the module docstring).

    :param max_size: the budget in bytes (``ReplayPlugin(mem_size=...)`` must equal it).
    :param codec: how exemplars are stored (masked, raw, jpeg, cim).
    :param mode: ``"total"`` (a fixed budget re-divided among the seen classes) or
        ``"per_class"`` (``max_size // total_num_classes`` bytes per class).
    :param total_num_classes: the number of classes of the stream; required for ``"per_class"``.
    :param selection: ``"herding"`` (iCaRL herding on the L2-normalised fused embeddings, ties to the
        lower index: :func:`~avalanche_exmask.storage.selection.herding_order`), ``"random"``, or any
        Avalanche ``ExemplarsSelectionStrategy``. A feature-based one
        (``FeatureBasedExemplarsSelectionStrategy``, e.g. Avalanche's ``HerdingSelectionStrategy`` or
        ``ClosestToCenterSelectionStrategy``) orders the candidates from the fused embeddings of the
        buffer's one scoring pass (its own feature extractor is not run); any other gets
        ``make_sorted_indices(strategy, candidates)``.
    :param seed: seeds the random order and the candidate cap.
    :param scorer: one eval forward pass over candidates; defaults to :func:`default_scorer`.
    :param candidates_per_class: score at most this many random candidates per class (``None``: all).
    :param batch_size: batch size of the scoring pass.
    :param augmentation: applied when a record is decoded for replay (e.g.
        :class:`~avalanche_exmask.training.augmentation.MultimodalAugmentation`).
    """

    max_size: int  # set by Avalanche's ExemplarsBuffer.__init__

    def __init__(
        self,
        *,
        max_size: int,
        codec: Codec,
        mode: Literal["total", "per_class"] = "total",
        total_num_classes: int | None = None,
        selection: Literal["herding", "random"] | ExemplarsSelectionStrategy = "herding",
        seed: int = 0,
        scorer: Scorer | None = None,
        candidates_per_class: int | None = None,
        batch_size: int = 64,
        augmentation: Augmentation | None = None,
    ) -> None:
        if not isinstance(max_size, int) or max_size < 0:
            raise ValueError(f"max_size must be a non-negative int number of bytes; got {max_size!r}")
        if mode not in ("total", "per_class"):
            raise ValueError(f"mode must be 'total' or 'per_class'; got {mode!r}")
        if mode == "per_class" and (total_num_classes is None or total_num_classes < 1):
            raise ValueError(f"mode='per_class' needs total_num_classes >= 1; got {total_num_classes!r}")
        if not isinstance(selection, ExemplarsSelectionStrategy) and selection not in ("herding", "random"):
            raise ValueError(f"selection must be 'herding', 'random' or an ExemplarsSelectionStrategy; got {selection!r}")
        if candidates_per_class is not None and candidates_per_class < 1:
            raise ValueError(f"candidates_per_class must be >= 1 or None; got {candidates_per_class}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        super().__init__(max_size)
        self.codec = codec
        self.mode = mode
        self.total_num_classes = total_num_classes
        self.selection = selection
        self.scorer: Scorer = scorer if scorer is not None else default_scorer
        self.candidates_per_class = candidates_per_class
        self.batch_size = batch_size
        self.augmentation = augmentation
        self._generator = torch.Generator().manual_seed(seed)
        self._records: dict[int, list[Record]] = {}
        self._read_workers = 0  # DataLoader workers reading candidates, from the last update's kwargs

    # ------------------------------------------------------------------ updates
    def update(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        """Add the new classes of ``strategy.experience`` (``ReplayPlugin`` calls this).

        :param kwargs: the arguments of ``strategy.train(...)``; with ``num_workers >= 1`` the
            candidates are read (images decoded and resized) in that many DataLoader workers,
            started once for the update's classes (:class:`~avalanche_exmask.storage.candidate_reader.CandidateReader`).
        """
        self._read_workers = int(kwargs.get("num_workers") or 0)
        self.post_adapt(strategy, strategy.experience)

    def post_adapt(self, agent_state: SupervisedTemplate, exp: Any) -> None:
        """Score, select and encode the candidates of the classes of ``exp`` not yet stored.

        :raises ValueError: if a class's share cannot hold any of its records (buffer unchanged).
        """
        dataset = exp.dataset.eval() if hasattr(exp.dataset, "eval") else exp.dataset
        targets = torch.as_tensor(list(dataset.targets), dtype=torch.long)
        new_classes = sorted(set(targets.tolist()) - set(self._records))
        with CandidateReader(dataset, self._read_workers) as reader:
            streams = {
                label: self._class_records(agent_state, reader, torch.nonzero(targets == label).flatten(), label)
                for label in new_classes
            }
            self._admit(streams)

    def resize(self, strategy: Any, new_size: int) -> None:
        """Change the budget to ``new_size`` bytes, evicting to fit.

        :raises ValueError: if a stored class could keep no record (buffer and budget unchanged).
        """
        old_size, self.max_size = self.max_size, new_size
        try:
            self._admit({})
        except ValueError:
            self.max_size = old_size
            raise

    def _class_records(
        self, strategy: SupervisedTemplate, reader: CandidateReader, indices: torch.Tensor, label: int
    ) -> Iterator[Record]:
        """Records of one class's candidates (``indices`` into the reader's dataset), encoded lazily
        in selection order."""
        model, device = strategy.model, strategy.device
        if self.candidates_per_class is not None and len(indices) > self.candidates_per_class:
            picked = torch.randperm(len(indices), generator=self._generator)[: self.candidates_per_class]
            indices = indices[picked.sort().values]
        # Each candidate is read once: scored from this list, and the selected ones encoded from it.
        candidates = reader.read(indices.tolist())
        scores, labels = self._score(model, candidates, device)
        if len(labels) != len(indices) or bool((labels != label).any()):
            raise ValueError(
                f"the scorer returned labels {labels.tolist()[:8]}... for {len(indices)} candidates of class {label}"
            )
        order = self._order(strategy, candidates, scores)
        needs_importance = getattr(self.codec, "needs_token_importance", False)
        for position in order.tolist():
            sample, item_scores = candidates[position][0], scores[position]
            if needs_importance:
                item_scores.token_importance = token_importance(model, sample.input_ids, device)
            yield self.codec.encode(sample, item_scores, label)

    def _score(self, model: torch.nn.Module, candidates: list, device: Any) -> tuple[MaskingScores, torch.Tensor]:
        """The scorer's ``(MaskingScores [n], labels long [n])`` for ``candidates``, with the model
        itself (not its DDP wrapper).

        Under ``torchrun`` each rank scores its batches of the list (batch ``b`` on rank
        ``b mod world_size``: :func:`~avalanche_exmask.distributed.batch_shard`) and the results are
        gathered in list order on every rank, so every rank selects and encodes the same records
        from the same scores, bit-identical to a single-process run's (each batch is the same batch).
        """
        model = unwrap_model(model)
        if not is_distributed():
            return self.scorer(model, candidates, device, self.batch_size)
        mine = batch_shard(len(candidates), self.batch_size)
        with rank_aligned_rng():
            local = self.scorer(model, [candidates[i] for i in mine], device, self.batch_size) if mine else None
        scores = gather_shards(None if local is None else local[0], mine, len(candidates))
        labels = gather_shards(None if local is None else local[1], mine, len(candidates))
        return scores, labels

    def _order(self, strategy: SupervisedTemplate, candidates: list, scores: MaskingScores) -> torch.Tensor:
        """The candidates' selection order (long ``[n]``)."""
        if self.selection == "herding":
            return herding_order(scores.embedding)
        if self.selection == "random":
            return random_order(len(candidates), self._generator)
        if isinstance(self.selection, FeatureBasedExemplarsSelectionStrategy):
            order = self.selection.make_sorted_indices_from_features(scores.embedding)
        else:
            subset = _make_taskaware_classification_dataset(
                ListDataset(candidates), targets=[int(y) for _, y, *_ in candidates], task_labels=0
            )
            order = self.selection.make_sorted_indices(strategy, subset)
        order = torch.as_tensor(list(order), dtype=torch.long)
        if sorted(order.tolist()) != list(range(len(candidates))):
            raise ValueError(
                f"{type(self.selection).__name__} returned an order that is not a permutation of the {len(candidates)} candidates"
            )
        return order

    def _shares(self, labels: Sequence[int]) -> dict[int, int]:
        """Each class's byte share."""
        if self.mode == "per_class":
            if self.total_num_classes is None:
                raise ValueError("mode='per_class' needs total_num_classes >= 1; got None")
            if len(labels) > self.total_num_classes:
                raise ValueError(f"{len(labels)} classes seen but total_num_classes={self.total_num_classes}")
            share = self.max_size // self.total_num_classes
        else:
            share = self.max_size // max(len(labels), 1)
        return {label: share for label in labels}

    def _admit(self, new: Mapping[int, Iterable[Record]]) -> None:
        """Re-fit the stored classes and add ``new`` ones (records in selection order); atomic."""
        shares = self._shares([*self._records, *new])
        fitted: dict[int, list[Record]] = {}
        for label, source in [*self._records.items(), *new.items()]:
            seen: list[Record] = []
            kept = fit_to_budget(record_sizes(source, seen), shares[label])
            if isinstance(source, Generator):
                source.close()  # frees the class's scores before the next class is scored
            if not kept:
                smallest = min((record.nbytes for record in seen), default=None)
                raise ValueError(
                    f"a budget of {shares[label]} bytes for class {label} (max_size={self.max_size} bytes, "
                    f"mode={self.mode!r}) cannot hold one exemplar: its smallest record is {smallest} bytes"
                )
            fitted[label] = [seen[index] for index in kept]
        self._records = fitted
        self.buffer = _make_taskaware_classification_dataset(
            RecordDataset(fitted, self.codec.decode, self.augmentation),
            targets=[label for label, group in fitted.items() for _ in group],
            task_labels=0,
        )

    def load_records(self, records: Mapping[int, Sequence[Record]]) -> None:
        """Replace the stored records (label -> records in selection order), refit them to the
        budget and rebuild the replay dataset; atomic (checkpoints restore a buffer this way).

        :raises ValueError: if the budget cannot keep every record (buffer unchanged).
        """
        previous = self._records
        self._records = {int(label): list(group) for label, group in records.items()}
        try:
            self._admit({})
            kept = self.exemplars_per_class()
            wanted = {label: len(group) for label, group in self._records.items()}
            if kept != wanted:
                raise ValueError(f"the budget of {self.max_size} bytes keeps {kept} exemplars per class, not {wanted}")
        except ValueError:
            self._records = previous
            self._admit({})
            raise

    @property
    def generator(self) -> torch.Generator:
        """The private generator of random selection and the candidate cap (checkpoints save its state)."""
        return self._generator

    # ------------------------------------------------------------------ reporting
    @property
    def records(self) -> dict[int, list[Record]]:
        """Stored records per class, in selection order (a shallow copy)."""
        return {label: list(group) for label, group in self._records.items()}

    def state_dict(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """``(JSON-ready state, tensors)``: the records (payload bytes in one ``uint8`` tensor) and
        the private generators' states (:mod:`~avalanche_exmask.storage.buffer_state`)."""
        from avalanche_exmask.storage.buffer_state import buffer_state_dict

        return buffer_state_dict(self)

    def load_state_dict(self, state: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`'s output: everything is checked first (same codec, budget and
        mode; every record decodes), then applied; on failure the buffer is left as it was.

        :raises ValueError: naming what does not fit.
        """
        from avalanche_exmask.storage.buffer_state import apply_buffer_state, check_buffer_state

        apply_buffer_state(self, check_buffer_state(self, state, tensors))

    def exemplars_per_class(self) -> dict[int, int]:
        """Number of stored exemplars per class."""
        return {label: len(group) for label, group in self._records.items()}

    def content_sha256(self) -> str:
        """SHA-256 over the stored records (label, byte length, payload, in class and selection
        order): equal digests mean byte-identical buffers (across runs, ranks or a resume)."""
        digest = hashlib.sha256()
        for label, group in sorted(self._records.items()):
            for record in group:
                digest.update(f"{label}:{len(record.data)}:".encode())
                digest.update(record.data)
        return digest.hexdigest()

    @property
    def accounted_nbytes(self) -> int:
        """Sum of the stored records' ``nbytes``; never more than ``max_size``."""
        return sum(record.nbytes for group in self._records.values() for record in group)

    def resident_nbytes(self) -> int:
        """Bytes the stored records occupy in this process: record objects, payloads, class lists."""
        return sum(
            sys.getsizeof(group) + sum(record.resident_nbytes() for record in group) for group in self._records.values()
        )

    def stats(self) -> BufferStats:
        """Per-class counts, bytes and (for masked records) kept fractions."""
        classes = {}
        for label, group in self._records.items():
            classes[label] = ClassStats(
                n_exemplars=len(group),
                nbytes=sum(record.nbytes for record in group),
                kept_patch_fraction=mean_of(record.kept_patch_fraction for record in group),
                kept_token_fraction=mean_of(record.kept_token_fraction for record in group),
            )
        return BufferStats(
            codec=self.codec.name,
            budget_nbytes=self.max_size,
            accounted_nbytes=self.accounted_nbytes,
            resident_nbytes=self.resident_nbytes(),
            classes=classes,
        )


class MaskedExemplarBuffer(ByteBudgetBuffer):
    """The exemplar-masking storage policy: a :class:`ByteBudgetBuffer` whose codec defaults to
    ``MaskedCodec(background_downsample="patch")`` (the paper's masks; each discarded patch kept as
    its mean colour, see :class:`~avalanche_exmask.storage.codecs.masked.MaskedCodec`); other
    arguments as there."""

    def __init__(self, *, max_size: int, codec: Codec | None = None, **kwargs: Any) -> None:
        codec = codec if codec is not None else MaskedCodec(background_downsample="patch")
        super().__init__(max_size=max_size, codec=codec, **kwargs)
