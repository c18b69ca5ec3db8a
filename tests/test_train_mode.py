"""The cheap train/eval switch leaves every module as ``Module.train`` leaves it."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.models.train_mode import eval_mode, set_train_mode


class _OwnTrain(nn.Module):
    """Overrides ``train``: counts calls and keeps its child in eval mode always."""

    def __init__(self) -> None:
        super().__init__()
        self.child = nn.Dropout(0.5)
        self.calls: list[bool] = []

    def train(self, mode: bool = True) -> _OwnTrain:
        self.calls.append(mode)
        self.training = mode
        self.child.train(False)
        return self


def _tree() -> nn.Module:
    shared = nn.Linear(2, 2)
    tree = nn.Sequential(shared, nn.Sequential(nn.Dropout(0.1), shared), _OwnTrain())
    tree.register_module("absent", None)
    return tree


def _flags(model: nn.Module) -> list[bool]:
    return [module.training for module in model.modules()]


@pytest.mark.parametrize("build", [_tree, lambda: MultimodalCLIPClassifier(pretrained=None)])
@pytest.mark.parametrize("mode", [False, True])
def test_leaves_every_module_as_module_train_does(build, mode):
    torch.manual_seed(0)
    model = build()
    for index, module in enumerate(model.modules()):  # a mixed start
        module.training = index % 3 == 0
    reference = copy.deepcopy(model)
    set_train_mode(model, mode)
    reference.train(mode)
    assert _flags(model) == _flags(reference)
    assert set(_flags(model)) == ({mode, False} if build is _tree else {mode})  # _OwnTrain keeps its child in eval


def test_a_module_overriding_train_gets_its_own_call():
    tree = _tree()
    set_train_mode(tree, False)
    set_train_mode(tree, True)
    assert tree[2].calls == [False, True] and tree[2].child.training is False


def test_eval_mode_restores_the_models_own_mode_also_after_an_error():
    model = _tree()
    set_train_mode(model, True)
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(model):
            assert not any(module.training for module in model.modules())
            raise RuntimeError("inside")
    assert _flags(model) == _flags(copy.deepcopy(model).train(True))
    set_train_mode(model, False)
    with eval_mode(model):
        pass
    assert not any(_flags(model))


def test_refuses_a_mode_that_is_not_a_bool():
    with pytest.raises(ValueError, match="boolean; got 1"):
        set_train_mode(_tree(), 1)  # type: ignore[arg-type]
