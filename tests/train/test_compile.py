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
#: Methods whose step has a data-dependent shape, so torch.compile splits it (the engine then
#: compiles it with graph breaks): DINOv2's iBOT loss gets one row per masked patch, and
#: IBOTPatchLoss counts them on the host.
GRAPH_BREAKS = {"dinov2"}


@pytest.mark.parametrize("name", methods.list_methods())
def test_training_step_compiles_as_one_graph(name: str) -> None:
    torch._dynamo.reset()
    model = build(name)
    eager = copy.deepcopy(model)
    views = default_views(model, batch_size=4)
    fullgraph = name not in GRAPH_BREAKS
    step = torch.compile(model.training_step, fullgraph=fullgraph, backend="aot_eager")
    torch.manual_seed(1)
    compiled_loss = step(views, INFO)
    torch.manual_seed(1)
    eager_loss = eager.training_step(views, INFO)
    torch.testing.assert_close(compiled_loss, eager_loss)
    compiled_loss.backward()
    assert any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", [n for n in methods.list_methods() if n not in GRAPH_BREAKS])
def test_steps_and_epochs_do_not_recompile_the_step(name: str) -> None:
    """Schedules (EMA momentum per step, DINO's teacher temperature per epoch) must not
    turn into compile-time constants: a step recompiled every step or epoch would hit
    torch's recompile limit and stop (fullgraph) or fall back to eager within a run."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = build(name)
    views = default_views(model, batch_size=4)
    step = torch.compile(model.training_step, fullgraph=True, backend="eager")
    for index in range(12):  # 12 steps over 6 epochs
        step(views, StepInfo(step=index, max_steps=100, epoch=index // 2, max_epochs=50))
    # The first call specialises on step 0, the next generalises (automatic dynamic
    # shapes); one more is allowed for a schedule phase that ends (e.g. a warm-up).
    assert counters["stats"]["unique_graphs"] <= 3


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
