"""What a method is to the runner: a :class:`MethodSpec` registered by name, built from a
:class:`BuildContext`.

A new method is one module with one registration::

    from avalanche_exmask.methods.base import MethodSpec
    from avalanche_exmask.registry import METHODS

    def build(context):
        return MyStrategy(**context.template_kwargs)

    METHODS.register("mine")(MethodSpec(build=build, description="..."))

Methods with an exemplar buffer name their codec (``codec="raw"``): the config's
``storage.options.<codec>`` then applies to them, the runner builds that codec for them
(:meth:`BuildContext.codec`) and reports the buffer's figures. Methods with options of their own
name a frozen dataclass (``options=MyOptions``): the config's ``method_options.<name>`` is checked
against its fields and completed with its defaults before any run starts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

from avalanche_exmask.config_schema import RunConfig

__all__ = ["MethodSpec", "BuildContext"]


@dataclasses.dataclass
class BuildContext:
    """Everything a method builder gets.

    :ivar config: the run's validated config.
    :ivar model: the model (a ``MultimodalCLIPClassifier``).
    :ivar optimizer: AdamW over the model's trainable parameters.
    :ivar benchmark: the Avalanche benchmark (with ``class_names`` where known).
    :ivar n_classes: classes of the whole stream.
    :ivar budget_nbytes: the memory budget in bytes (``storage.budget`` converted).
    :ivar template_kwargs: Avalanche ``SupervisedTemplate`` arguments shared by every method
        (model, optimizer, criterion, batch sizes of one process, epochs, device, evaluator; under
        ``torchrun`` or mixed precision also ``plugins``, which a builder that adds plugins of its own
        must merge).
    """

    config: RunConfig
    model: Any
    optimizer: Any
    benchmark: Any
    n_classes: int
    budget_nbytes: int
    template_kwargs: dict[str, Any]

    def codec_options(self, codec: str) -> dict[str, Any]:
        """The run's options of ``codec``, completed with the codec's defaults."""
        from avalanche_exmask.storage.codec_options import resolve_codec_options

        return resolve_codec_options(codec, self.config.storage.options.get(codec, {}))

    def class_token_ids(self) -> dict[int, Any] | None:
        """Label -> class-name token ids, from the benchmark's ``class_names`` (``None`` if it has none)."""
        names = getattr(self.benchmark, "class_names", None)
        if names is None:
            return None
        from avalanche_exmask.masking.text_mask import class_name_token_ids
        from avalanche_exmask.models.factory import get_tokenizer

        return class_name_token_ids(names, get_tokenizer(self.config.model.name))

    def codec(self, codec: str) -> Any:
        """An instance of ``codec`` with the run's options and the model's patch size.

        :raises ValueError: if its text rule needs class names and the benchmark has none.
        """
        from avalanche_exmask.distributed import unwrap_model
        from avalanche_exmask.models.protocols import Patched
        from avalanche_exmask.storage.codec_options import build_codec

        model = cast(Patched, unwrap_model(self.model))  # a MultimodalCLIPClassifier (see models/protocols.py)
        return build_codec(codec, self.codec_options(codec), patch_size=int(model.patch_size), class_token_ids=self.class_token_ids())


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    :param build: ``BuildContext -> strategy`` (an Avalanche template).
    :param description: one line for ``--help`` and tables.
    :param codec: the codec of its byte-budgeted buffer, or ``None`` for no buffer.
    :param joint: trained once on the whole stream (an upper bound), not experience by experience.
    :param report: ``(strategy, context) -> dict`` of extra figures for the results file; their
        keys are listed in the results file's ``figures`` and shown by the tables.
    :param options: a frozen dataclass whose fields are the method's options: the config's
        ``method_options.<name>`` is validated against it and completed with its defaults.
    :param backbone_adapter: the ``model.adapter`` the method needs (e.g. ``"none"`` for methods on a
        frozen backbone): filled in where a config does not name one, an error where it names another.
    :param learning_rate: ``resolved run config -> float or None``: the learning rate the runner
        builds the optimizer with, where the method sets its own (``None``: ``train.lr``).
    """

    build: Callable[[BuildContext], Any]
    description: str
    codec: str | None = None
    joint: bool = False
    report: Callable[[Any, BuildContext], dict[str, Any]] | None = None
    options: type | None = None
    backbone_adapter: str | None = None
    learning_rate: Callable[[RunConfig], float | None] | None = None

    def optimizer_lr(self, config: RunConfig) -> float:
        """The learning rate of the run's optimizer: the method's own, else ``train.lr``."""
        own = self.learning_rate(config) if self.learning_rate is not None else None
        return config.train.lr if own is None else own
