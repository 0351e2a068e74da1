"""Every registered method, parametrized over ``fastssl.methods.list_methods()``: a method
added to the registry is tested here the day it lands, before it has tests of its own.

Each one is built on a tiny backbone, fed its own default transform's views, and stepped
once with SGD: the loss is a finite scalar, the trainable modules move, the parts outside
``trainable_modules()`` (EMA / teacher copies) get no gradient, and a second build under
the same seed gives the same loss (determinism).
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastssl import methods
from fastssl.methods.base import Method, StepInfo
from fastssl.transforms.utils import IMAGENET_NORMALIZE
from tests.methods._method_steps import (
    default_views,
    optimizer_step,
    tiny_causal_vit,
    tiny_vit,
    trainable_parameters,
)
from tests.methods._two_view_steps import tiny_cnn

# Backbone and input size per method; methods not listed train a one-convolution CNN at
# 16 px. ViT-only methods need the tiny ViT, DenseCL needs feature maps, AIM a causal ViT.
BACKBONES: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "aim": (tiny_causal_vit, 32),
    "capi": (tiny_vit, 32),
    "densecl": (lambda: tiny_cnn(maps=True), 16),
    "detconb": (lambda: tiny_cnn(maps=True), 16),
    "detcons": (lambda: tiny_cnn(maps=True), 16),
    "dino": (tiny_vit, 32),
    "dinov2": (tiny_vit, 32),
    "ijepa": (tiny_vit, 32),
    "mae": (tiny_vit, 32),
    "msn": (tiny_vit, 32),
    "pmsn": (tiny_vit, 32),
    "simmim": (tiny_vit, 32),
    "swav": (tiny_vit, 32),
    "vicregl": (lambda: tiny_cnn(maps=True), 16),
}


def small_heads(name: str) -> dict[str, object]:
    """The small head widths of the method's own test module (``TINY``), or none."""
    module = methods.get(name).__module__.rsplit(".", 1)[-1]
    try:
        tests = importlib.import_module(f"tests.methods.test_{module}")
    except ModuleNotFoundError:
        return {}  # a method without tests of its own yet trains at its paper's sizes
    return dict(getattr(tests, "TINY", {}))


def build(name: str, seed: int = 0) -> Method:
    torch.manual_seed(seed)
    make_backbone, size = BACKBONES.get(name, (tiny_cnn, 16))
    return methods.create(name, backbone=make_backbone(), input_size=size, **small_heads(name))


def step(model: Method, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    views = default_views(model, batch_size=4, seed=seed)
    torch.manual_seed(seed)
    return optimizer_step(model, views, StepInfo(step=0, max_steps=10))


def test_registry_names_the_eighteen_methods() -> None:
    assert methods.list_methods() == sorted(
        [
            "aim",
            "barlowtwins",
            "byol",
            "capi",
            "dcl",
            "dclw",
            "densecl",
            "detconb",
            "detcons",
            "dino",
            "dinov2",
            "directclr",
            "fastsiam",
            "ijepa",
            "lejepa",
            "mae",
            "mmcr",
            "moco",
            "msn",
            "nnclr",
            "pmsn",
            "simclr",
            "simmim",
            "simsiam",
            "smog",
            "swav",
            "tico",
            "vicreg",
            "vicregl",
            "wmse",
        ]
    )
    with pytest.raises(ValueError, match=r"unknown method 'simclrr'.*simclr"):
        methods.get("simclrr")


@pytest.mark.parametrize("name", methods.list_methods())
def test_one_step_trains_and_leaves_the_rest_alone(name: str) -> None:
    model = build(name)
    assert model.name == name and isinstance(model, methods.get(name))
    loss, before = step(model)
    assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: loss {loss}"
    trainable = {id(p) for p in trainable_parameters(model)}
    moved = [
        n
        for n, p in model.named_parameters()
        if id(p) in trainable and not torch.equal(p.detach(), before[n])
    ]
    assert moved, f"{name}: no trainable parameter moved"
    assert any(n.startswith("backbone.") for n in moved), f"{name}: the backbone did not move"
    for n, p in model.named_parameters():
        if id(p) not in trainable:
            assert p.grad is None or not p.grad.any(), f"{name}: {n} is outside the optimizer"


@pytest.mark.parametrize("name", methods.list_methods())
def test_same_seed_same_loss(name: str) -> None:
    first, _ = step(build(name, seed=3), seed=3)
    second, _ = step(build(name, seed=3), seed=3)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize("name", methods.list_methods())
def test_views_overrides_reach_every_view_and_typos_are_named(name: str) -> None:
    model = build(name)
    half = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # every transform takes normalize
    if not hasattr(model.default_transform(), "view_specs"):
        check_per_sample_normalize(model, half)  # views with grids or masks (VICRegL, DetCon)
        with pytest.raises(ValueError, match=r"views\.normalise: \w+ has no .*normalize"):
            model.default_transform(normalise=half)
        return
    default = model.default_transform().view_specs
    specs = model.default_transform(normalize=half).view_specs
    assert len(specs) == len(default)
    assert [s.crop_size for s in specs] == [s.crop_size for s in default]
    for spec, paper in zip(specs, default, strict=True):
        assert paper.normalize_mean != half["mean"]
        assert (spec.normalize_mean, spec.normalize_std) == (half["mean"], half["std"]), name
    with pytest.raises(ValueError, match=r"views\.normalise: \w+Transform has no .*normalize"):
        model.default_transform(normalise=half)


def check_per_sample_normalize(model: Method, half: dict[str, tuple[float, ...]]) -> None:
    """For a transform without ViewSpecs (views with grids or masks): under one seed, its
    images (float (3, h, w) outputs) with ``normalize=half`` are its default images
    renormalised, and its other outputs are unchanged."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    outputs = []
    for kwargs in ({}, {"normalize": half}):
        torch.manual_seed(0)
        random.seed(0)
        outputs.append(model.default_transform(**kwargs)(Image.fromarray(pixels)))
    paper, halved = outputs
    assert len(paper) == len(halved)
    mean = torch.tensor(IMAGENET_NORMALIZE["mean"]).view(3, 1, 1)
    std = torch.tensor(IMAGENET_NORMALIZE["std"]).view(3, 1, 1)
    images = 0
    for out, renormalised in zip(paper, halved, strict=True):
        is_image = out.dim() == 3 and out.shape[0] == 3 and out.shape[-1] != 2
        if out.is_floating_point() and is_image:
            images += 1
            assert not torch.allclose(out, renormalised)
            torch.testing.assert_close(renormalised * 0.5 + 0.5, out * std + mean)
        else:  # a grid (h, w, 2) or a mask (1, h, w)
            assert torch.equal(out, renormalised)
    assert images >= 1


EMA_METHODS = {
    "byol", "capi", "densecl", "detconb", "dino", "dinov2", "ijepa", "mmcr", "moco", "msn", "pmsn",
    "smog", "tico",
}  # fmt: skip


@pytest.mark.parametrize("name", methods.list_methods())
def test_ema_backbone_is_the_untrained_copy_of_the_backbone(name: str) -> None:
    model = build(name)
    ema = model.ema_backbone()
    if name not in EMA_METHODS:
        assert ema is None
        return
    assert ema is not None and ema is not model.backbone
    online = dict(model.backbone.named_parameters())
    copies = dict(ema.named_parameters())
    assert copies.keys() == online.keys()
    assert all(torch.equal(copies[k], online[k]) for k in online)  # a copy at init
    trainable = {id(p) for p in trainable_parameters(model)}
    assert not any(id(p) in trainable for p in ema.parameters()), f"{name}: the EMA is trained"


def test_get_resolves_names_and_module_paths() -> None:
    from tests.train._tiny import TINY, TinyMethod

    assert methods.get(TINY) is TinyMethod  # a user's Method subclass, "module:Class"
    assert methods.get("Barlow_Twins") is methods.get("barlowtwins")
    with pytest.raises(ValueError, match=r"does not name a fastssl\.methods\.Method subclass"):
        methods.get("torch.nn:Linear")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        methods.get("nope")
    with pytest.raises(ImportError):
        methods.get("no_such_package.module:Class")
