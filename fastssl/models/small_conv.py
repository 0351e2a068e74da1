"""Convolutions with a tiny output computed as matrix products: exact, and faster on CPUs.

A ResNet on small images ends with tiny feature maps: at 32 px the standard stem leaves
layer3 with 2x2 and layer4 with 1x1 positions. oneDNN, PyTorch's CPU convolution library,
handles such maps badly: on a 2-core Xeon with AMX-BF16, layer4's 3x3 convolution (512
channels, batch 512, 1x1 map, forward and backward) took 100-240 ms in bfloat16 and 40-60 ms
in float32, for what is one 512x512x512 matrix product (about 7 and 12 ms), because only the
centre tap of the kernel ever meets the input. Such a convolution is the same sum as a few
matrix products, one per output position: the position's input window, clipped to the image
(taps that fall on the zero padding add nothing), times the kernel taps that meet it. This
module computes it that way when the output has at most ``max_positions`` positions (default
4) and hands every other call to ``torch.nn.functional.conv2d``.

Measured on that Xeon (``benchmarks/small_conv.py``), the SimCLR step of a
``timm:resnet18`` at 32 px (batch 256, two views, channels_last) runs 2.7x faster in
bf16-mixed and 1.5x faster in float32; a 4x4 output (16 positions) is already faster in
oneDNN, hence the default.

Exactness: the products are the convolution's own sums (only the order of additions,
and so the last bits, may differ), and autograd derives the backward pass from them.
State-dict keys and parameters are those of ``nn.Conv2d``, so checkpoints load either way.

Example:
    >>> import timm
    >>> backbone = convert_small_output_convs(timm.create_model("resnet18", num_classes=0))
    >>> backbone(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 512])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_MAX_POSITIONS = 4


def _output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Outputs of a convolution along one axis (no dilation); 0 when the kernel does not fit."""
    return max((size + 2 * padding - kernel) // stride + 1, 0)


def _windows(size: int, kernel: int, stride: int, padding: int) -> list[tuple[int, int, int, int]]:
    """Per output index along one axis: ``(input_lo, input_hi, tap_lo, tap_hi)``.

    The input slice ``[input_lo, input_hi)`` is what the kernel window of that output
    covers inside the image; ``[tap_lo, tap_hi)`` are the kernel taps that meet it.
    """
    windows = []
    for i in range(_output_size(size, kernel, stride, padding)):
        start = i * stride - padding
        lo = min(max(start, 0), size)
        hi = max(min(start + kernel, size), lo)  # lo == hi: the window is all padding
        windows.append((lo, hi, lo - start, hi - start))
    return windows


def output_positions(
    size: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
) -> int:
    """Number of output positions (Ho * Wo) of a 2-D convolution without dilation."""
    return _output_size(size[0], kernel[0], stride[0], padding[0]) * _output_size(
        size[1], kernel[1], stride[1], padding[1]
    )


def conv2d_as_matmul(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` as one matrix product per output position.

    Meant for outputs of a few positions (cost grows with their number); groups = 1,
    dilation = 1, zero padding.

    Args:
        x: Input of shape (B, C, H, W), either memory format.
        weight: Kernel of shape (O, C, kh, kw).
        bias: Shape (O,) or None.
        stride: (sh, sw).
        padding: (ph, pw), zeros.

    Returns:
        Shape (B, O, Ho, Wo), in the memory format of ``x``; under autocast, in its dtype.

    Example:
        >>> x, w = torch.randn(8, 16, 2, 2), torch.randn(32, 16, 3, 3)
        >>> y = conv2d_as_matmul(x, w, padding=(1, 1))
        >>> torch.allclose(y, F.conv2d(x, w, padding=1), atol=1e-5)
        True
    """
    if x.dim() != 4 or weight.dim() != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"conv2d_as_matmul needs x (B, C, H, W) and weight (O, C, kh, kw) with the same C, "
            f"got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    rows = _windows(height, kh, stride[0], padding[0])
    cols = _windows(width, kw, stride[1], padding[1])
    # Channels last on both sides, so that a window flattens as (rows, cols, channels) and a
    # channels_last input needs no copy when the window is the whole image.
    x_nhwc = x.permute(0, 2, 3, 1)
    w_nhwc = weight.permute(0, 2, 3, 1)
    outputs = []
    for in_r0, in_r1, tap_r0, tap_r1 in rows:
        for in_c0, in_c1, tap_c0, tap_c1 in cols:
            k = (in_r1 - in_r0) * (in_c1 - in_c0) * channels  # 0: only padding (the bias)
            window = x_nhwc[:, in_r0:in_r1, in_c0:in_c1, :].reshape(batch, k)
            taps = w_nhwc[:, tap_r0:tap_r1, tap_c0:tap_c1, :].reshape(out_channels, k)
            outputs.append(F.linear(window, taps, bias))  # (B, O); autocast casts all three
    y = torch.stack(outputs, dim=1).view(batch, len(rows), len(cols), out_channels)
    y = y.permute(0, 3, 1, 2)  # (B, O, Ho, Wo), channels_last strides
    if not x.is_contiguous(memory_format=torch.channels_last):
        y = y.contiguous()
    return y


class SmallOutputConv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes outputs of at most ``max_positions`` positions as matmuls.

    Same arguments, parameters and state-dict keys as ``nn.Conv2d``; calls with a larger
    output, groups, dilation, a non-zero padding mode or unbatched input go to
    ``nn.Conv2d.forward``. See the module docstring for why.

    Args:
        *args: Those of ``nn.Conv2d``.
        max_positions: Largest Ho * Wo computed as matrix products.
        **kwargs: Those of ``nn.Conv2d``.

    Example:
        >>> conv = SmallOutputConv2d(512, 512, 3, padding=1, bias=False)
        >>> conv(torch.randn(4, 512, 1, 1)).shape  # one matmul of the centre taps
        torch.Size([4, 512, 1, 1])
    """

    def __init__(
        self, *args: object, max_positions: int = DEFAULT_MAX_POSITIONS, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.max_positions = max_positions

    def forward(self, x: Tensor) -> Tensor:
        padding = self.padding
        if (
            isinstance(padding, str)
            or x.dim() != 4
            or self.groups != 1
            or self.padding_mode != "zeros"
            or any(d != 1 for d in self.dilation)
        ):
            return super().forward(x)
        positions = output_positions(x.shape[2:], self.kernel_size, self.stride, padding)
        if not 0 < positions <= self.max_positions:
            return super().forward(x)
        return conv2d_as_matmul(x, self.weight, self.bias, self.stride, padding)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_positions={self.max_positions}"


def convert_small_output_convs(
    module: nn.Module, max_positions: int = DEFAULT_MAX_POSITIONS
) -> nn.Module:
    """Replaces every plain ``nn.Conv2d`` in ``module`` by a :class:`SmallOutputConv2d`.

    The new layers share the old ones' parameters (an optimizer built before still holds
    them) and keep their state-dict keys. Subclasses of ``nn.Conv2d`` (timm's
    ``Conv2dSame``, weight-standardized convolutions) are left alone: their forward differs.

    Args:
        module: Any model; changed in place, and returned (a bare ``nn.Conv2d`` is
            returned converted).
        max_positions: Largest output (Ho * Wo) computed as matrix products.

    Returns:
        ``module`` (or its replacement when ``module`` itself is an ``nn.Conv2d``).

    Example:
        >>> import torchvision
        >>> model = convert_small_output_convs(torchvision.models.resnet18())
        >>> type(model.layer4[0].conv1).__name__
        'SmallOutputConv2d'
    """
    if max_positions < 1:
        raise ValueError(f"max_positions must be at least 1, got {max_positions}")
    if type(module) is nn.Conv2d:
        return _converted(module, max_positions)
    for name, child in module.named_children():
        converted = convert_small_output_convs(child, max_positions)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _converted(conv: nn.Conv2d, max_positions: int) -> SmallOutputConv2d:
    new = SmallOutputConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device="meta",
        max_positions=max_positions,
    )
    new.weight = conv.weight
    new.bias = conv.bias
    new.train(conv.training)
    return new
