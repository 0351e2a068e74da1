"""The compute half of ``fastssl profile``: training steps on in-memory batches."""

from __future__ import annotations

import warnings

import pytest
import torch

from fastssl.profile.compute import STEP_STAGES, ComputeHarness, resolve_device
from fastssl.profile.profiler import parse_variants
from fastssl.train.config import PretrainConfig, apply_overrides
from tests.profile._slow import SLOW
from tests.train._tiny import TINY

SHAPES = [(3, 8, 8), (3, 8, 8)]


def _config(*overrides: str, method: str = TINY) -> PretrainConfig:
    base = [f"method={method}", "data.input_size=8", "trainer.accelerator=cpu"]
    return apply_overrides(PretrainConfig(), [*base, *overrides])


def test_steps_train_and_their_parts_add_up() -> None:
    harness = ComputeHarness(_config(), torch.device("cpu"), SHAPES)
    before = harness.method.head.weight.detach().clone()
    result = harness.measure(batch_size=8, steps=3, warmup=1)
    assert not torch.equal(before, harness.method.head.weight)  # the optimizer stepped
    assert set(result.stages_ms) == set(STEP_STAGES)
    assert result.steps == 3 and result.batch_size == 8 and result.images_per_s > 0
    assert result.loss_timing == "hooks on the method's criterion"
    assert result.stages_ms["loss"] > 0 and result.stages_ms["backward"] > 0
    # Medians of the parts bracket the median step (they need not add up exactly).
    assert sum(result.stages_ms.values()) == pytest.approx(result.step_ms_median, rel=0.5)


def test_a_slow_forward_is_timed_as_forward_not_loss() -> None:
    config = _config("method_kwargs.compute_delay_s=0.03", method=SLOW)
    result = ComputeHarness(config, torch.device("cpu"), SHAPES).measure(8, steps=2, warmup=1)
    assert result.stages_ms["forward"] >= 30.0
    assert result.stages_ms["loss"] < 15.0
    assert result.images_per_s < 8 / 0.03


def test_variants_restore_the_layout_and_scale_the_batch() -> None:
    harness = ComputeHarness(_config(), torch.device("cpu"), SHAPES)
    weight = harness.method.backbone[0].weight
    nhwc = harness.measure(8, steps=1, warmup=1, variant="cl", channels_last=True)
    assert nhwc.settings["channels_last"] is True
    assert weight.is_contiguous()  # back to NCHW after the variant
    bf16 = harness.measure(8, steps=1, warmup=1, precision="bf16-mixed")
    assert bf16.settings["precision"] == "bf16-mixed"
    assert harness.measure(16, steps=1, warmup=0).batch_size == 16
    assert [tuple(v.shape) for v in harness.views(4)] == [(4, 3, 8, 8)] * 2


def test_harness_errors_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="shapes is empty"):
        ComputeHarness(_config(), torch.device("cpu")).views(2)
    with pytest.raises(ValueError, match=r"trainer\.precision='64-true' cannot be profiled"):
        config = _config()
        config.trainer.precision = "64-true"  # type: ignore[assignment]
        ComputeHarness(config, torch.device("cpu"), SHAPES)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("gpu")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("auto", None), ("none", ()), ("bf16, channels-last", ("bf16", "channels_last"))],
)
def test_parse_variants(text: str, expected: tuple[str, ...] | None) -> None:
    assert parse_variants(text) == expected


def test_parse_variants_names_unknown_entries() -> None:
    with pytest.raises(ValueError, match="--variants fp8: unknown"):
        parse_variants("bf16,fp8")


@pytest.mark.parametrize(("native", "expected"), [(False, "32-true"), (True, "bf16-mixed")])
def test_harness_steps_in_the_precision_pretrain_would_train_in(
    native: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastssl.train import engine

    monkeypatch.setattr(engine, "cpu_supports", lambda dtype: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        harness = ComputeHarness(_config("trainer.precision=bf16-mixed"), torch.device("cpu"))
    assert harness.precision == expected
    assert any("32-true instead" in str(w.message) for w in caught) is (not native)
