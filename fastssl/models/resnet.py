"""Small-image ResNets (CIFAR-style stem) with optional split batch norm.

The residual networks of He et al. 2015 ("Deep Residual Learning for Image Recognition",
https://arxiv.org/abs/1512.03385) as used for CIFAR-sized images: the 7x7 stride-2 stem
convolution and the max pooling of the ImageNet models are replaced by one 3x3 stride-1
convolution, so 32x32 inputs keep enough resolution, and a ``resnet-9`` variant exists
for tiny models. With ``num_splits > 0`` every batch norm is a
:class:`~fastssl.models.batchnorm.SplitBatchNorm`, which simulates the per-GPU batch
statistics of a ``num_splits``-GPU run on one device (MoCo's shuffled batch norm).

Same module names, order and parameter layout as LightlySSL 1.6's ``lightly.models.resnet``:
checkpoints load either way and ``list(resnet.children())[:-1]`` (everything but the
classifier) is the feature extractor, as in LightlySSL's tutorials.
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.models.batchnorm import get_norm_layer


def _shortcut(in_planes: int, out_planes: int, stride: int, num_splits: int) -> nn.Sequential:
    """Identity (an empty Sequential) or a strided 1x1 projection when the shape changes."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        get_norm_layer(out_planes, num_splits),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-9/18/34).

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; ``conv1`` has the stride.

    Args:
        in_planes: Input channels.
        planes: Output channels (``planes * expansion``, expansion 1).
        stride: Stride of the first convolution and of the shortcut.
        num_splits: Splits of :class:`~fastssl.models.batchnorm.SplitBatchNorm`; 0 for
            ``BatchNorm2d``.

    Shapes:
        (B, in_planes, H, W) -> (B, planes, ceil(H / stride), ceil(W / stride)).

    Example:
        >>> import torch
        >>> BasicBlock(16, 32, stride=2)(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 4, 4])
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, num_splits: int = 0):
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = get_norm_layer(planes, num_splits)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = get_norm_layer(planes, num_splits)
        self.shortcut = _shortcut(in_planes, out_planes, stride, num_splits)

    def forward(self, x: Tensor) -> Tensor:
        """Applies the block to ``x`` of shape (B, in_planes, H, W)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) convolutions with a residual (ResNet-50/101/152).

    Args:
        in_planes: Input channels.
        planes: Width of the inner convolutions; the output has ``4 * planes`` channels.
        stride: Stride of the 3x3 convolution and of the shortcut.
        num_splits: Splits of :class:`~fastssl.models.batchnorm.SplitBatchNorm`; 0 for
            ``BatchNorm2d``.

    Shapes:
        (B, in_planes, H, W) -> (B, 4 * planes, ceil(H / stride), ceil(W / stride)).

    Example:
        >>> import torch
        >>> Bottleneck(64, 16)(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, num_splits: int = 0):
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = get_norm_layer(planes, num_splits)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = get_norm_layer(planes, num_splits)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = get_norm_layer(out_planes, num_splits)
        self.shortcut = _shortcut(in_planes, out_planes, stride, num_splits)

    def forward(self, x: Tensor) -> Tensor:
        """Applies the block to ``x`` of shape (B, in_planes, H, W)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet for small images (He et al. 2015, https://arxiv.org/abs/1512.03385).

    3x3 stem convolution (stride 1) -> batch norm -> ReLU -> four stages of ``block`` s
    with ``64, 128, 256, 512`` x ``width`` channels (stages 2-4 halve the resolution) ->
    4x4 average pooling -> linear classifier. The pooling is fixed at 4x4, as in
    LightlySSL: 32x32 inputs give a 1x1 map and a ``512 * width * expansion`` feature. For
    other input sizes use the feature extractor ``nn.Sequential(*list(resnet.children())
    [:-1], nn.AdaptiveAvgPool2d(1))`` (which, as in LightlySSL, skips the stem ReLU).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: Blocks per stage (four stages).
        num_classes: Outputs of the classifier.
        width: Channel multiplier.
        num_splits: Splits of :class:`~fastssl.models.batchnorm.SplitBatchNorm`; 0 for
            ``BatchNorm2d``.

    Shapes:
        (B, 3, 32, 32) -> (B, num_classes).

    Example:
        >>> import torch
        >>> ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, width=0.25)(
        ...     torch.randn(2, 3, 32, 32)
        ... ).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck] = BasicBlock,
        layers: list[int] = [2, 2, 2, 2],  # noqa: B006 - LightlySSL's default, never mutated
        num_classes: int = 10,
        width: float = 1.0,
        num_splits: int = 0,
    ):
        super().__init__()
        if len(layers) < 4:
            raise ValueError(f"ResNet: 'layers' must list 4 stages, got {list(layers)}.")
        self.base = int(64 * width)
        self.in_planes = self.base  # channels entering the next block, updated per block
        self.conv1 = nn.Conv2d(3, self.base, 3, stride=1, padding=1, bias=False)
        self.bn1 = get_norm_layer(self.base, num_splits)
        self.layer1 = self._make_layer(block, self.base, layers[0], 1, num_splits)
        self.layer2 = self._make_layer(block, self.base * 2, layers[1], 2, num_splits)
        self.layer3 = self._make_layer(block, self.base * 4, layers[2], 2, num_splits)
        self.layer4 = self._make_layer(block, self.base * 8, layers[3], 2, num_splits)
        self.linear = nn.Linear(self.base * 8 * block.expansion, num_classes)

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        num_layers: int,
        stride: int,
        num_splits: int,
    ) -> nn.Sequential:
        """One stage: ``num_layers`` blocks, the first with ``stride``."""
        blocks = []
        for i in range(num_layers):
            blocks.append(block(self.in_planes, planes, stride if i == 0 else 1, num_splits))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores (B, num_classes) of images (B, 3, 32, 32)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4).flatten(1)
        return cast(Tensor, self.linear(out))


_ARCHITECTURES: dict[str, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    "resnet-9": (BasicBlock, [1, 1, 1, 1]),
    "resnet-18": (BasicBlock, [2, 2, 2, 2]),
    "resnet-34": (BasicBlock, [3, 4, 6, 3]),
    "resnet-50": (Bottleneck, [3, 4, 6, 3]),
    "resnet-101": (Bottleneck, [3, 4, 23, 3]),
    "resnet-152": (Bottleneck, [3, 8, 36, 3]),
}


def ResNetGenerator(
    name: str = "resnet-18",
    width: float = 1,
    num_classes: int = 10,
    num_splits: int = 0,
) -> ResNet:
    """Builds a small-image :class:`ResNet` by name.

    Args:
        name: One of ``resnet-9``, ``resnet-18``, ``resnet-34``, ``resnet-50``,
            ``resnet-101``, ``resnet-152``.
        width: Channel multiplier.
        num_classes: Outputs of the classifier.
        num_splits: Simulated GPUs of :class:`~fastssl.models.batchnorm.SplitBatchNorm`
            (e.g. 8 for MoCo on one GPU); 0 for ``BatchNorm2d``.

    Returns:
        The ResNet.

    Raises:
        ValueError: If ``name`` is unknown.

    Example:
        >>> import torch
        >>> resnet = ResNetGenerator("resnet-18", 1, num_splits=8)
        >>> backbone = torch.nn.Sequential(
        ...     *list(resnet.children())[:-1], torch.nn.AdaptiveAvgPool2d(1)
        ... )
    """
    if name not in _ARCHITECTURES:
        raise ValueError(
            f"ResNetGenerator: unknown 'name' {name!r}; try one of {', '.join(_ARCHITECTURES)}."
        )
    block, layers = _ARCHITECTURES[name]
    return ResNet(
        block=block,
        layers=list(layers),
        num_classes=num_classes,
        width=width,
        num_splits=num_splits,
    )


__all__ = ["BasicBlock", "Bottleneck", "ResNet", "ResNetGenerator"]
