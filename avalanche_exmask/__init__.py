"""avalanche-exmask: exemplar masking for multimodal class-incremental learning, on Avalanche.

Public API (named like Avalanche's):

* strategy and plugins: :class:`ExemplarMasking`, :class:`ExemplarMaskingPlugin`,
  :class:`ByteBudgetReplayPlugin` (any codec, class-balanced replay), :class:`WeightAligningPlugin`
* storage policies: :class:`MaskedExemplarBuffer`, :class:`ByteBudgetBuffer`, codecs
  :class:`MaskedCodec`, :class:`RawCodec`, :class:`JpegCodec` (MRDC-style), :class:`CimCodec` (CIM-style)
* masking rules: :class:`ImageMaskRule`, :class:`TextMaskRule`; augmentation :class:`MultimodalAugmentation`
* model: :class:`MultimodalCLIPClassifier`, :class:`SSFConfig`, :func:`create_clip`
* replay-free baselines on the frozen model: strategies :class:`LearningToPromptCLIP`,
  :class:`DualPromptStrategy`, :class:`EASEStrategy` with models :class:`L2PCLIP`,
  :class:`DualPromptCLIP`, :class:`EASECLIP`
* data: :class:`MultimodalSample`, :class:`SampleEncoder`
* benchmarks: :func:`synthetic_multimodal`, :func:`image_text_folder`, :func:`mm_imagenet_r`,
  :func:`upmc_food101`, and what they return besides their streams, :class:`BenchmarkInfo`
* budgets: :func:`budget_from_samples_per_class`, :func:`plain_exemplar_nbytes`
* readouts: :func:`ncm_accuracy` (nearest class mean over the stored exemplars)
* several processes (``torchrun``): :class:`DistributedTrainingPlugin`, :func:`gathered_accuracy_metrics`,
  :func:`unwrap_model` (the model behind a DDP wrapper); :mod:`avalanche_exmask.distributed`
* experiments: :class:`RunConfig`, :func:`load_runs`, :func:`run_experiment`; registries
  :data:`METHODS`, :data:`CODECS`, :data:`BENCHMARKS`, :class:`MethodSpec`, :class:`CodecSpec`,
  :class:`BenchmarkSpec`

The names are imported lazily (PEP 562): ``import avalanche_exmask`` loads no submodule, and
each name's module (with torch, Avalanche, open_clip, ...) is imported on first access.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "ExemplarMasking": "avalanche_exmask.training.strategy",
    "ExemplarMaskingPlugin": "avalanche_exmask.training.plugin",
    "MaskedExemplarBuffer": "avalanche_exmask.storage.buffer",
    "ByteBudgetBuffer": "avalanche_exmask.storage.buffer",
    "MaskedCodec": "avalanche_exmask.storage.codecs",
    "RawCodec": "avalanche_exmask.storage.codecs",
    "JpegCodec": "avalanche_exmask.storage.codecs",
    "CimCodec": "avalanche_exmask.storage.codecs",
    "ImageMaskRule": "avalanche_exmask.masking.image_mask",
    "TextMaskRule": "avalanche_exmask.masking.text_mask",
    "MultimodalAugmentation": "avalanche_exmask.training.augmentation",
    "MultimodalCLIPClassifier": "avalanche_exmask.models.classifier",
    "SSFConfig": "avalanche_exmask.models.ssf",
    "L2PCLIP": "avalanche_exmask.models.l2p",
    "DualPromptCLIP": "avalanche_exmask.models.dualprompt",
    "EASECLIP": "avalanche_exmask.models.ease",
    "LearningToPromptCLIP": "avalanche_exmask.training.prompting",
    "DualPromptStrategy": "avalanche_exmask.training.prompting",
    "EASEStrategy": "avalanche_exmask.training.prompting",
    "create_clip": "avalanche_exmask.models.factory",
    "MaskingScores": "avalanche_exmask.models.outputs",
    "MultimodalSample": "avalanche_exmask.data.sample",
    "make_sample": "avalanche_exmask.data.sample",
    "SampleEncoder": "avalanche_exmask.data.encode",
    "BenchmarkInfo": "avalanche_exmask.benchmarks.info",
    "synthetic_multimodal": "avalanche_exmask.benchmarks.synthetic",
    "image_text_folder": "avalanche_exmask.benchmarks.image_text_folder",
    "mm_imagenet_r": "avalanche_exmask.benchmarks.mm_imagenet_r",
    "upmc_food101": "avalanche_exmask.benchmarks.upmc_food101",
    "budget_from_samples_per_class": "avalanche_exmask.storage.budget",
    "plain_exemplar_nbytes": "avalanche_exmask.storage.budget",
    "ByteBudgetReplayPlugin": "avalanche_exmask.training.plugin",
    "WeightAligningPlugin": "avalanche_exmask.training.weight_aligning",
    "MixedPrecisionPlugin": "avalanche_exmask.training.mixed_precision",
    "ncm_accuracy": "avalanche_exmask.training.ncm",
    "DistributedTrainingPlugin": "avalanche_exmask.training.distributed_plugin",
    "gathered_accuracy_metrics": "avalanche_exmask.training.distributed_metrics",
    "unwrap_model": "avalanche_exmask.distributed",
    "RunConfig": "avalanche_exmask.config",
    "load_runs": "avalanche_exmask.config",
    "run_experiment": "avalanche_exmask.experiment",
    "METHODS": "avalanche_exmask.registry",
    "CODECS": "avalanche_exmask.registry",
    "BENCHMARKS": "avalanche_exmask.registry",
    "CodecSpec": "avalanche_exmask.registry",
    "BenchmarkSpec": "avalanche_exmask.registry",
    "MethodSpec": "avalanche_exmask.methods.base",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the module of public ``name`` on first access and keep the value in this module."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's own names and the lazily imported public ones."""
    return sorted(set(globals()) | set(__all__))
