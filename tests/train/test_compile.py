"""``trainer.compile``: every registered method's training step (backbone, heads, loss)
traces as one graph, and the engine compiles it as a whole.

The traces use the ``aot_eager`` backend (dynamo + AOT autograd, no code generation), so
all methods fit in seconds on a CPU; inductor's code generation is the same for any graph.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from fastssl import methods
from fastssl.methods.base import StepInfo
from fastssl.train import module as module_file
from fastssl.train.module import PretrainModule
from tests.methods._method_steps import default_views
from tests.methods.test_registry import build
from tests.train._tiny import TINY, TinyMethod

pytestmark = pytest.mark.compile
INFO = StepInfo(step=0, max_steps=10)


@pytest.mark.parametrize("name", methods.list_methods())
def test_training_step_compiles_as_one_graph(name: str) -> None:
    torch._dynamo.reset()
    model = build(name)
    eager = copy.deepcopy(model)
    views = default_views(model, batch_size=4)
    step = torch.compile(model.training_step, fullgraph=True, backend="aot_eager")
    torch.manual_seed(1)
    compiled_loss = step(views, INFO)
    torch.manual_seed(1)
    eager_loss = eager.training_step(views, INFO)
    torch.testing.assert_close(compiled_loss, eager_loss)
    compiled_loss.backward()
    assert any(p.grad is not None for p in model.parameters())


class _GraphBreak(TinyMethod):
    def training_step(self, views: Sequence[Tensor], info: StepInfo = StepInfo()) -> Tensor:  # noqa: B008
        torch._dynamo.graph_break()
        return super().training_step(views, info)


def test_module_compiles_the_whole_step_and_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        module_file.torch, "compile", functools.partial(torch.compile, backend="aot_eager")
    )
    torch._dynamo.reset()
    views = [torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)]
    module = PretrainModule(TINY, {"input_size": 8}, compile=True)
    plain = PretrainModule(TINY, {"input_size": 8}, compile=False)
    plain.load_state_dict(module.state_dict())  # same keys: the method's own
    torch.testing.assert_close(module._method_step(views, INFO), plain._method_step(views, INFO))
    broken = PretrainModule(f"{__name__}:_GraphBreak", {"input_size": 8}, compile=True)
    with pytest.warns(UserWarning, match="does not compile as one graph"):
        loss = broken._method_step(views, INFO)
    assert torch.isfinite(loss)
