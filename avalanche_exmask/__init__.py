"""avalanche-exmask: exemplar masking for multimodal class-incremental learning, on Avalanche.

Public API (named like Avalanche's):

* strategy and plugin: :class:`ExemplarMasking`, :class:`ExemplarMaskingPlugin`
* storage policies: :class:`MaskedExemplarBuffer`, :class:`ByteBudgetBuffer`, codecs
  :class:`MaskedCodec`, :class:`RawCodec`, :class:`JpegCodec` (MRDC-style), :class:`CimCodec` (CIM-style)
* masking rules: :class:`ImageMaskRule`, :class:`TextMaskRule`; augmentation :class:`MultimodalAugmentation`
* model: :class:`MultimodalCLIPClassifier`, :class:`SSFConfig`, :func:`create_clip`
* data: :class:`MultimodalSample`, :class:`SampleEncoder`
* benchmarks: :func:`synthetic_multimodal`, :func:`image_text_folder`, :func:`mm_imagenet_r`, :func:`upmc_food101`
* budgets: :func:`budget_from_samples_per_class`, :func:`plain_exemplar_nbytes`
* experiments: :class:`ExperimentConfig`, :func:`run_experiment`
"""
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.sample import MultimodalSample, make_sample
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.masking.text_mask import TextMaskRule
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.models.factory import create_clip
from avalanche_exmask.models.outputs import MaskingScores
from avalanche_exmask.models.ssf import SSFConfig
from avalanche_exmask.storage.budget import budget_from_samples_per_class, plain_exemplar_nbytes
from avalanche_exmask.storage.buffer import ByteBudgetBuffer, MaskedExemplarBuffer
from avalanche_exmask.storage.codecs import CimCodec, JpegCodec, MaskedCodec, RawCodec
from avalanche_exmask.training.augmentation import MultimodalAugmentation
from avalanche_exmask.training.plugin import ExemplarMaskingPlugin
from avalanche_exmask.training.strategy import ExemplarMasking
from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.experiment import ExperimentConfig, run_experiment

__version__ = "0.1.0"

__all__ = [
    "ExemplarMasking",
    "ExemplarMaskingPlugin",
    "MaskedExemplarBuffer",
    "ByteBudgetBuffer",
    "MaskedCodec",
    "RawCodec",
    "JpegCodec",
    "CimCodec",
    "ImageMaskRule",
    "TextMaskRule",
    "MultimodalAugmentation",
    "MultimodalCLIPClassifier",
    "SSFConfig",
    "create_clip",
    "MaskingScores",
    "MultimodalSample",
    "make_sample",
    "SampleEncoder",
    "synthetic_multimodal",
    "budget_from_samples_per_class",
    "plain_exemplar_nbytes",
    "ExperimentConfig",
    "run_experiment",
    "image_text_folder",
    "mm_imagenet_r",
    "upmc_food101",
]


def __getattr__(name: str):
    """Lazy access to the file-based benchmark generators (they import ``datasets``)."""
    if name == "image_text_folder":
        from avalanche_exmask.benchmarks.image_text_folder import image_text_folder

        return image_text_folder
    if name == "mm_imagenet_r":
        from avalanche_exmask.benchmarks.mm_imagenet_r import mm_imagenet_r

        return mm_imagenet_r
    if name == "upmc_food101":
        from avalanche_exmask.benchmarks.upmc_food101 import upmc_food101

        return upmc_food101
    raise AttributeError(f"module 'avalanche_exmask' has no attribute {name!r}")
