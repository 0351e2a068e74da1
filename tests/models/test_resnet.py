from __future__ import annotations

import pytest
import torch
from lightly.models import resnet as lightly_resnet
from lightly.models.batchnorm import SplitBatchNorm as LightlySplitBatchNorm
from torch import nn

import fastssl.models
from fastssl.models import resnet
from fastssl.models.batchnorm import SplitBatchNorm

RTOL, ATOL = 1e-4, 1e-5


def _pair(name: str, width: float, num_splits: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = resnet.ResNetGenerator(name, width, num_classes=7, num_splits=num_splits)
    torch.manual_seed(0)
    theirs = lightly_resnet.ResNetGenerator(name, width, num_classes=7, num_splits=num_splits)
    return ours, theirs


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    # lightly's SplitBatchNorm never counts batches; ours does (see the SplitBatchNorm tests).
    return {k: v for k, v in module.state_dict().items() if "num_batches_tracked" not in k}


@pytest.mark.parametrize("num_splits", [0, 2])
@pytest.mark.parametrize("name", ["resnet-9", "resnet-50"])
def test_matches_lightly(name: str, num_splits: int) -> None:
    ours, theirs = _pair(name, width=0.125, num_splits=num_splits)
    # Same modules in the same order (the tutorials slice children()), same init.
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key

    generator = torch.Generator().manual_seed(1)
    for step in range(2):
        x = torch.randn(2, 3, 32, 32, generator=generator)
        x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_ours, out_theirs = ours(x_ours), theirs(x_theirs)
        assert out_ours.shape == (2, 7)
        torch.testing.assert_close(out_ours, out_theirs, rtol=RTOL, atol=ATOL)
        weight = torch.randn(out_ours.shape, generator=generator)
        (out_ours * weight).sum().backward()
        (out_theirs * weight).sum().backward()
        torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=RTOL, atol=1e-6)
        grads = dict(theirs.named_parameters())
        for n, p in ours.named_parameters():
            torch.testing.assert_close(p.grad, grads[n].grad, rtol=RTOL, atol=ATOL, msg=n)
        if step == 0:
            ours.zero_grad()
            theirs.zero_grad()

    ours.eval()
    theirs.eval()
    state = _state(theirs)
    for key, value in _state(ours).items():
        torch.testing.assert_close(value, state[key], rtol=RTOL, atol=ATOL, msg=key)
    x = torch.randn(1, 3, 32, 32, generator=generator)
    torch.testing.assert_close(ours(x), theirs(x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("num_splits", [0, 8])
def test_moco_tutorial_feature_extractor(num_splits: int) -> None:
    """The backbone of LightlySSL's MoCo tutorial (there ResNetGenerator('resnet-18', 1,
    num_splits=8)): every child but the classifier, plus adaptive pooling."""
    ours, theirs = _pair("resnet-9", width=0.25, num_splits=num_splits)
    theirs.load_state_dict(ours.state_dict())
    extract_ours = nn.Sequential(*list(ours.children())[:-1], nn.AdaptiveAvgPool2d(1))
    extract_theirs = nn.Sequential(*list(theirs.children())[:-1], nn.AdaptiveAvgPool2d(1))
    x = torch.randn(8, 3, 16, 16)
    out = extract_ours(x)
    assert out.shape == (8, 128, 1, 1)
    torch.testing.assert_close(out, extract_theirs(x), rtol=RTOL, atol=ATOL)
    norms = [m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, SplitBatchNorm) == (num_splits > 0) for m in norms)
    assert all(
        isinstance(m, LightlySplitBatchNorm) == (num_splits > 0)
        for m in theirs.modules()
        if isinstance(m, nn.BatchNorm2d)
    )


@pytest.mark.parametrize(
    ("name", "blocks", "block"),
    [
        ("resnet-9", [1, 1, 1, 1], resnet.BasicBlock),
        ("resnet-18", [2, 2, 2, 2], resnet.BasicBlock),
        ("resnet-34", [3, 4, 6, 3], resnet.BasicBlock),
        ("resnet-50", [3, 4, 6, 3], resnet.Bottleneck),
        ("resnet-101", [3, 4, 23, 3], resnet.Bottleneck),
        ("resnet-152", [3, 8, 36, 3], resnet.Bottleneck),
    ],
)
def test_architectures(name: str, blocks: list[int], block: type[nn.Module]) -> None:
    with torch.device("meta"):  # no memory, no initialization cost
        ours = resnet.ResNetGenerator(name)
        theirs = lightly_resnet.ResNetGenerator(name)
    stages = [ours.layer1, ours.layer2, ours.layer3, ours.layer4]
    assert [len(stage) for stage in stages] == blocks
    assert all(isinstance(b, block) for stage in stages for b in stage)
    shapes = {k: v.shape for k, v in theirs.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == shapes
    expansion = 4 if block is resnet.Bottleneck else 1
    assert ours.linear.in_features == 512 * expansion


@pytest.mark.parametrize("block_name", ["BasicBlock", "Bottleneck"])
@pytest.mark.parametrize(("in_planes", "planes", "stride"), [(16, 16, 1), (16, 8, 2), (32, 8, 1)])
def test_blocks_match_lightly(block_name: str, in_planes: int, planes: int, stride: int) -> None:
    torch.manual_seed(0)
    ours = getattr(resnet, block_name)(in_planes, planes, stride)
    theirs = getattr(lightly_resnet, block_name)(in_planes, planes, stride)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    # The shortcut is the identity exactly when the shape does not change.
    identity = stride == 1 and in_planes == planes * ours.expansion
    assert (len(ours.shortcut) == 0) == identity
    x = torch.randn(4, in_planes, 8, 8)
    out = ours(x)
    assert out.shape == (4, planes * ours.expansion, 8 // stride, 8 // stride)
    torch.testing.assert_close(out, theirs(x), rtol=RTOL, atol=ATOL)


def test_width_and_public_paths() -> None:
    model = resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=3, width=0.5)
    assert model.base == 32 and model.conv1.out_channels == 32
    assert model.linear.in_features == 256
    assert fastssl.models.ResNetGenerator is resnet.ResNetGenerator
    assert "ResNetGenerator" in fastssl.models.__all__
    with pytest.raises(AttributeError, match="no attribute"):
        fastssl.models.NoSuchThing  # noqa: B018


@pytest.mark.parametrize("name", ["resnet-20", "ResNet-18", ""])
def test_unknown_name(name: str) -> None:
    with pytest.raises(ValueError, match="resnet-18"):
        resnet.ResNetGenerator(name)
