import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fastssl.models.small_conv import (
    SmallOutputConv2d,
    conv2d_as_matmul,
    convert_small_output_convs,
    output_positions,
)

# (batch, in, out, height, width, kernel, stride, padding): the shapes of a ResNet's last
# stages at 32 px (1x1 and 2x2 maps), rectangular maps and kernels, no padding, and
# outputs larger than the matmul path's default.
SHAPES = [
    (4, 8, 16, 1, 1, (3, 3), (1, 1), (1, 1)),  # layer4 at 32 px: only the centre tap
    (4, 8, 16, 2, 2, (3, 3), (1, 1), (1, 1)),  # layer3 at 32 px: every tap, clipped windows
    (4, 8, 16, 2, 2, (3, 3), (2, 2), (1, 1)),  # layer4's strided entry: four taps
    (4, 8, 16, 4, 4, (3, 3), (2, 2), (1, 1)),
    (3, 5, 7, 2, 3, (3, 3), (1, 1), (1, 1)),
    (2, 4, 6, 2, 2, (1, 1), (2, 2), (0, 0)),  # a downsample shortcut
    (2, 4, 6, 3, 1, (3, 1), (1, 1), (1, 0)),
    (2, 4, 6, 5, 5, (5, 5), (1, 1), (0, 0)),  # a kernel that covers the whole image
    (2, 3, 5, 6, 6, (3, 3), (1, 1), (1, 1)),  # 36 positions
    (2, 3, 5, 1, 1, (1, 1), (1, 1), (1, 1)),  # 8 of 9 outputs see only padding: the bias
    (2, 3, 5, 1, 2, (2, 2), (1, 1), (2, 2)),  # windows entirely in the padding, kernel 2
]


def _inputs(batch, cin, cout, h, w, kernel, bias=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, h, w, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(cout, cin, *kernel, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(cout, generator=g, dtype=dtype, requires_grad=True) if bias else None
    return x, weight, b


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("batch", "cin", "cout", "h", "w", "kernel", "stride", "padding"), SHAPES)
def test_conv2d_as_matmul_equals_conv2d_values_and_gradients(
    batch, cin, cout, h, w, kernel, stride, padding, bias
):
    x, weight, b = _inputs(batch, cin, cout, h, w, kernel, bias)
    expected = F.conv2d(x, weight, b, stride, padding)
    got = conv2d_as_matmul(x, weight, b, stride, padding)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(expected)
    inputs = [t for t in (x, weight, b) if t is not None]
    expected_grads = torch.autograd.grad(expected, inputs, grad_out)
    got_grads = torch.autograd.grad(got, inputs, grad_out)
    for e, g in zip(expected_grads, got_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv2d_as_matmul_keeps_the_memory_format(channels_last):
    x, weight, b = _inputs(2, 4, 6, 2, 2, (3, 3))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = conv2d_as_matmul(x.detach().contiguous(memory_format=fmt), weight, b, (1, 1), (1, 1))
    assert y.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(y, F.conv2d(x, weight, b, 1, 1))


def test_conv2d_as_matmul_under_bf16_autocast_matches_the_convolution():
    x, weight, _ = _inputs(8, 32, 16, 1, 1, (3, 3), dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = conv2d_as_matmul(x, weight, None, (1, 1), (1, 1))
        expected = F.conv2d(x, weight, None, 1, 1)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    ("x_shape", "w_shape"), [((2, 3, 4), (5, 3, 1, 1)), ((2, 3, 4, 4), (5, 4, 1, 1))]
)
def test_conv2d_as_matmul_rejects_bad_shapes(x_shape, w_shape):
    with pytest.raises(ValueError, match="same C"):
        conv2d_as_matmul(torch.randn(x_shape), torch.randn(w_shape))


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "expected"),
    [((1, 1), (3, 3), (1, 1), (1, 1), 1), ((2, 2), (3, 3), (2, 2), (1, 1), 1),
     ((4, 4), (3, 3), (1, 1), (1, 1), 16), ((2, 3), (3, 3), (1, 1), (1, 1), 6),
     ((1, 1), (3, 3), (1, 1), (0, 0), 0)],
)  # fmt: skip
def test_output_positions(size, kernel, stride, padding, expected):
    assert output_positions(size, kernel, stride, padding) == expected
    if expected:
        x = torch.zeros(1, 1, *size)
        out = F.conv2d(x, torch.zeros(1, 1, *kernel), None, stride, padding)
        assert out.shape[2] * out.shape[3] == expected


@pytest.mark.parametrize(
    ("height", "max_positions", "uses_matmul"),
    [(1, 4, True), (2, 4, True), (4, 4, False), (4, 16, True), (2, 1, False)],
)
def test_small_output_conv_dispatches_on_the_output_size(
    monkeypatch, height, max_positions, uses_matmul
):
    conv = SmallOutputConv2d(4, 6, 3, padding=1, max_positions=max_positions)
    calls = []
    monkeypatch.setattr(
        "fastssl.models.small_conv.conv2d_as_matmul",
        lambda *a: calls.append(a) or F.conv2d(a[0], a[1], a[2], a[3], a[4]),
    )
    conv(torch.randn(2, 4, height, height))
    assert bool(calls) is uses_matmul


@pytest.mark.parametrize(
    "kwargs",
    [{"groups": 2}, {"dilation": 2, "padding": 2}, {"padding": "same"},
     {"padding_mode": "reflect"}],
)  # fmt: skip
def test_small_output_conv_hands_other_convolutions_to_torch(monkeypatch, kwargs):
    conv = SmallOutputConv2d(4, 6, 3, **{"padding": 1, **kwargs})
    reference = nn.Conv2d(4, 6, 3, **{"padding": 1, **kwargs})
    reference.load_state_dict(conv.state_dict())
    monkeypatch.setattr(
        "fastssl.models.small_conv.conv2d_as_matmul",
        lambda *a: pytest.fail("the matmul path must not run"),
    )
    x = torch.randn(2, 4, 2, 2)  # 4 output positions at most: small enough for the matmuls
    torch.testing.assert_close(conv(x), reference(x))
    assert conv(torch.randn(4, 2, 2)).shape == reference(torch.randn(4, 2, 2)).shape


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    # zero_init_residual off (the default) keeps every convolution on the output's path.
    return torchvision.models.resnet18(num_classes=10)


def test_convert_keeps_parameters_state_dict_and_outputs():
    model = _resnet()
    params = dict(model.named_parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.train()
    expected = model(x)
    expected_grads = torch.autograd.grad(expected.square().sum(), list(params.values()))
    model.load_state_dict(state)  # undo the batch-norm statistics of that pass
    converted = convert_small_output_convs(model)
    assert converted is model
    kinds = {type(m) for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert kinds == {SmallOutputConv2d}
    for name, p in model.named_parameters():
        assert p is params[name]  # shared: an optimizer built before still holds them
    assert model.state_dict().keys() == state.keys()
    got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    got_grads = torch.autograd.grad(got.square().sum(), list(params.values()))
    for e, g in zip(expected_grads, got_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-3)


def test_convert_skips_conv2d_subclasses_and_converts_a_bare_conv():
    class Custom(nn.Conv2d):
        pass

    model = nn.Sequential(Custom(3, 4, 3), nn.Conv2d(4, 4, 1))
    convert_small_output_convs(model, max_positions=9)
    assert type(model[0]) is Custom
    assert type(model[1]) is SmallOutputConv2d and model[1].max_positions == 9
    bare = nn.Conv2d(3, 4, 3, bias=False).eval()
    converted = convert_small_output_convs(bare)
    assert isinstance(converted, SmallOutputConv2d) and converted.bias is None
    assert not converted.training and converted.weight is bare.weight
    with pytest.raises(ValueError, match="max_positions must be at least 1"):
        convert_small_output_convs(model, max_positions=0)


def test_converted_model_trains_like_the_original():
    """Three SGD steps of a ResNet-18 at 32 px end at the same weights either way (float64,
    so that float32 rounding, which training amplifies, does not hide a real difference)."""
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    target = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(3))
    results = []
    for convert in (False, True):
        model = _resnet().double()
        if convert:
            convert_small_output_convs(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for _ in range(3):
            optimizer.zero_grad()
            F.cross_entropy(model(x), target).backward()
            optimizer.step()
        results.append(model.state_dict())
    for key, value in results[0].items():
        torch.testing.assert_close(results[1][key], value, rtol=1e-9, atol=1e-9, msg=key)
