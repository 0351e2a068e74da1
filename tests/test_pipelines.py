"""Every recipe under pipelines/ (sub-folders included) is one ``fastssl pretrain`` accepts.

Each YAML loads with the typed schema, names a registered method and passes that method only
arguments its constructor takes, with values of the annotated types (checked on the
signature: no model is built). The ImageNet benchmark recipes (pipelines/imagenet1k/) are
checked against LightlySSL's benchmark scripts (optimizer, learning rate at the row's batch,
weight decay, warm-up, final lr) and carry LightlySSL's figures as targets, which
benchmarks/imagenet.md repeats; the ImageNet-100 and Imagenette variants must equal their
ImageNet-1k recipe except where the dataset size enters.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import pytest
import torch

from fastssl import methods
from fastssl.cli import main
from fastssl.train.config import PretrainConfig, load_config, to_dict
from fastssl.train.optim import merge_optimizer, scaled_lr
from tests.train._tiny import make_folder

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines"
RECIPES = sorted(PIPELINES.rglob("*.yaml"))
BENCHMARK_DOC = ROOT / "benchmarks" / "imagenet.md"
VARIANT_FOLDERS = ("imagenet100", "imagenette")
#: Training images per dataset, for the settings counted in steps (SwaV's frozen prototypes).
TRAIN_IMAGES = {"imagenet1k": 1_281_167, "imagenet100": 126_689, "imagenette": 9_469}


def _name(path: Path) -> str:
    return path.relative_to(PIPELINES).as_posix()


@dataclass(frozen=True)
class Row:
    """A row of LightlySSL 1.6's ImageNet-1k table and the settings of lightly's script."""

    method: str
    backbone: str
    batch: int
    targets: tuple[str, str, str]  # Linear Top1, Finetune Top1, kNN Top1 (LightlySSL's figures)
    optimizer: str
    peak_lr: float  # lightly's learning rate at the row's global batch
    lr_scaling: str
    weight_decay: float
    warmup_epochs: float
    end_factor: float  # lightly's CosineWarmupScheduler end_value


SQRT_LR = 0.075 * math.sqrt(256)  # SimCLR appendix B.1, lightly's simclr/dcl/dclw scripts
ROWS: dict[str, Row] = {
    "barlowtwins": Row(
        "barlowtwins", "resnet50", 256, ("62.9", "72.6", "45.6"),
        "lars", 0.2, "linear", 1.5e-6, 10, 0.001,
    ),
    "byol": Row(
        "byol", "resnet50", 256, ("62.5", "74.5", "46.0"),
        "lars", 0.45, "linear", 1e-6, 10, 0.001,
    ),
    "dino_resnet50": Row(
        "dino", "resnet50", 128, ("68.2", "72.5", "49.9"),
        "sgd", 0.03 * 128 / 256, "linear", 1e-4, 10, 0.001,
    ),
    "dino_vits16": Row(
        "dino", "timm:vit_small_patch16_224(drop_path_rate=0.1)", 128, ("73.3", "79.8", "67.5"),
        "adamw", 5e-4 * 128 / 256, "linear", 0.04, 10, 0.001,
    ),
    "mae_vitb16": Row(
        "mae", "timm:vit_base_patch16_224", 256, ("46.0", "81.3", "11.2"),
        "adamw", 1.5e-4, "linear", 0.05, 40, 0.001,
    ),
    "mocov2": Row(
        "moco", "resnet50", 256, ("61.5", "74.3", "41.8"),
        "sgd", 0.03, "linear", 1e-4, 0, 0.001,
    ),
    "simclr": Row(
        "simclr", "resnet50", 256, ("63.2", "73.9", "44.8"),
        "lars", SQRT_LR, "sqrt", 1e-6, 10, 0.001,
    ),
    "dcl": Row(
        "dcl", "resnet50", 256, ("65.1", "73.5", "49.6"),
        "lars", SQRT_LR, "sqrt", 1e-6, 10, 0.001,
    ),
    "dclw": Row(
        "dclw", "resnet50", 256, ("64.5", "73.2", "48.5"),
        "lars", SQRT_LR, "sqrt", 1e-6, 10, 0.001,
    ),
    "swav": Row(
        "swav", "resnet50", 256, ("67.2", "75.4", "49.5"),
        "lars", 0.6, "linear", 1e-6, 10, 0.0006,
    ),
    "tico": Row(
        "tico", "resnet50", 256, ("49.7", "72.7", "26.6"),
        "lars", 0.02, "linear", 1.5e-6, 10, 0.001,
    ),
    "vicreg": Row(
        "vicreg", "resnet50", 256, ("63.0", "73.7", "46.3"),
        "lars", 0.5, "linear", 1e-6, 10, 0.01,
    ),
}  # fmt: skip


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as parsed from YAML) is of the type ``hint`` describes."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        return (
            isinstance(value, list | tuple)
            and len(value) == len(args)
            and all(_fits(v, a) for v, a in zip(value, args, strict=True))
        )
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint this check does not model


def test_fits_checks_the_annotated_types() -> None:
    assert _fits(0.5, float) and _fits(2, float) and not _fits("0.5", float)
    assert _fits(None, int | None) and not _fits(True, int) and not _fits(1.5, int)
    assert _fits("resnet50", str | torch.nn.Module) and not _fits(3, str | torch.nn.Module)
    assert _fits([0.4, 1.0], tuple[float, float]) and not _fits([0.4], tuple[float, float])


def constructor_arguments(cls: type) -> dict[str, Any]:
    """Keyword arguments ``cls(...)`` accepts, with their type hints.

    A constructor that forwards ``**kwargs`` (PMSN to MSN) also accepts those of the next
    ``__init__`` along the MRO; the first one without ``**kwargs`` ends the walk.
    """
    accepted: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        hints = typing.get_type_hints(init)
        for name, parameter in parameters.items():
            if name != "self" and parameter.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY,
            ):
                accepted.setdefault(name, hints.get(name, Any))
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return accepted
    raise AssertionError(f"{cls.__name__} forwards **kwargs to no named arguments")


def test_constructor_arguments_follow_forwarded_kwargs() -> None:
    pmsn = constructor_arguments(methods.get("pmsn"))
    assert "power_law_exponent" in pmsn  # PMSN's own
    assert set(constructor_arguments(methods.get("msn"))) <= set(pmsn)


@pytest.mark.parametrize("path", RECIPES, ids=_name)
def test_recipe_loads_and_its_method_takes_its_kwargs(path: Path) -> None:
    config = load_config(path)
    assert config.method in methods.list_methods(), f"{_name(path)}: unknown method"
    cls = methods.get(config.method)
    accepted = constructor_arguments(cls)
    kwargs = config.method_kwargs
    unknown = sorted(set(kwargs) - set(accepted))
    assert not unknown, f"{_name(path)}: {cls.__name__} takes no {unknown}"
    # The engine sets input_size from data.input_size; one in method_kwargs would be ignored.
    assert "input_size" not in kwargs
    for key, value in kwargs.items():
        hint = accepted[key]
        assert _fits(value, hint), f"{_name(path)}: {key}={value!r} is not {hint}"


@pytest.mark.parametrize("path", RECIPES, ids=_name)
def test_recipe_comments_name_files_that_exist(path: Path) -> None:
    # A comment that points a reader at another recipe must name a real one (two recipes
    # once said "pipelines/" + name + ".yaml", a generator's leftover). Only pipelines/:
    # "benchmarks/..." in the comments may be LightlySSL's scripts, not this repository's.
    comments = "\n".join(
        line for line in path.read_text().splitlines() if line.lstrip().startswith("#")
    )
    named = re.findall(r"pipelines/\S*", comments)
    for token in named:
        target = token.rstrip(").,;:")
        if target.endswith("/") or "<" in target:  # a folder, or a pattern like <method>
            continue
        assert (ROOT / target).exists(), f"{_name(path)}: its comments name {token!r}"


def test_every_benchmark_row_has_a_recipe() -> None:
    assert sorted(p.stem for p in (PIPELINES / "imagenet1k").glob("*.yaml")) == sorted(ROWS)


def _header(path: Path) -> str:
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines if line.startswith("#"))


@pytest.mark.parametrize("row", sorted(ROWS))
def test_imagenet1k_recipe_holds_lightlys_settings(row: str) -> None:
    expected = ROWS[row]
    path = PIPELINES / "imagenet1k" / f"{row}.yaml"
    config = load_config(path)
    assert config.method == expected.method
    assert config.method_kwargs["backbone"] == expected.backbone
    assert config.data.batch_size == expected.batch and config.data.input_size == 224
    assert config.trainer.max_epochs == 100 and config.trainer.max_steps == -1
    assert config.trainer.out == f"runs/imagenet1k/{row}"
    # The optimizer the engine builds: the method's defaults under the recipe's fields.
    defaults = methods.get(config.method).optimizer_defaults
    optimizer = merge_optimizer(defaults, vars(config.optimizer))
    assert optimizer.name == expected.optimizer
    assert optimizer.lr_scaling == expected.lr_scaling
    reference = optimizer.reference_batch_size
    lr = scaled_lr(optimizer.lr, expected.batch, reference, optimizer.lr_scaling)
    assert lr == pytest.approx(expected.peak_lr, rel=1e-9)
    assert optimizer.weight_decay == pytest.approx(expected.weight_decay)
    assert config.schedule.warmup_steps is None
    assert config.schedule.warmup_epochs == expected.warmup_epochs
    assert config.schedule.end_factor == pytest.approx(expected.end_factor)
    assert config.optimizer.exclude_norm_and_bias  # lightly: no decay on norms and biases
    # The header names the row's targets and the exact command for this file.
    header = _header(path)
    linear, finetune, knn = expected.targets
    assert f"Linear Top1 {linear} | Finetune Top1 {finetune} | kNN Top1 {knn}" in header
    assert f"tools/launch_torchrun.sh pipelines/imagenet1k/{row}.yaml" in header


@pytest.mark.parametrize("row", sorted(ROWS))
def test_benchmark_doc_lists_the_row(row: str) -> None:
    lines = BENCHMARK_DOC.read_text().splitlines()
    linked = [line for line in lines if f"pipelines/imagenet1k/{row}.yaml" in line]
    assert linked, f"benchmarks/imagenet.md does not link pipelines/imagenet1k/{row}.yaml"
    cells = " | ".join(ROWS[row].targets)
    assert any(cells in line for line in linked), f"{row}: targets {cells} not in its row"


VARIANTS = sorted(p for folder in VARIANT_FOLDERS for p in (PIPELINES / folder).glob("*.yaml"))


def _dataset_free(config: PretrainConfig) -> dict[str, Any]:
    """The recipe without the fields that depend on the dataset."""
    values = to_dict(config)
    values["trainer"].pop("out")
    values["method_kwargs"].pop("n_steps_frozen_prototypes", None)
    return values


def test_variants_exist() -> None:
    for folder in VARIANT_FOLDERS:
        stems = {p.stem for p in (PIPELINES / folder).glob("*.yaml")}
        assert {"simclr", "byol", "dino_vits16", "mae_vitb16", "swav"} <= stems


@pytest.mark.parametrize("path", VARIANTS, ids=_name)
def test_variant_is_its_imagenet1k_recipe(path: Path) -> None:
    folder = path.parent.name
    base = PIPELINES / "imagenet1k" / path.name
    assert base.is_file(), f"{_name(path)} has no ImageNet-1k recipe {_name(base)}"
    config, reference = load_config(path), load_config(base)
    assert _dataset_free(config) == _dataset_free(reference)
    assert config.trainer.out == f"runs/{folder}/{path.stem}"
    if "n_steps_frozen_prototypes" in config.method_kwargs:  # frozen for the first epoch
        steps = TRAIN_IMAGES[folder] // config.data.batch_size
        assert config.method_kwargs["n_steps_frozen_prototypes"] == steps
    header = _header(path)
    assert f"tools/launch_torchrun.sh pipelines/{folder}/{path.name}" in header
    assert "fastssl shards" in header


@pytest.mark.parametrize("path", [p for p in RECIPES if load_config(p).views], ids=_name)
def test_recipe_views_are_arguments_of_the_method_transform(path: Path) -> None:
    from fastssl.profile.profiler import method_transform

    method_transform(load_config(path))  # raises for a views key the transform lacks


def test_dino_resnet50_narrows_the_crops_as_lightly_does() -> None:
    from fastssl.profile.profiler import method_transform

    specs = method_transform(
        load_config(PIPELINES / "imagenet1k" / "dino_resnet50.yaml")
    ).view_specs
    assert [s.crop_scale for s in specs] == [(0.14, 1.0)] * 2 + [(0.05, 0.14)] * 6
    assert [s.crop_size for s in specs] == [224] * 2 + [96] * 6


@pytest.mark.parametrize(
    ("path", "weight_decay_end", "clip", "final_lr"),
    [
        # The papers' recipes: DINO's and MSN's cosine weight decay, DINO's clipping.
        ("dino.yaml", 0.4, 3.0, 1e-6),
        ("msn.yaml", 0.4, None, 1e-6),
        # lightly's scripts: no clipping; the ResNet-50 keeps its weight decay constant.
        ("imagenet1k/dino_resnet50.yaml", None, None, 1e-6),
        ("imagenet1k/dino_vits16.yaml", 0.4, None, 1e-6),
        ("imagenet100/dino_vits16.yaml", 0.4, None, 1e-6),
        ("imagenette/dino_vits16.yaml", 0.4, None, 1e-6),
    ],
)
def test_weight_decay_schedule_and_clipping_of_the_recipes(
    path: str, weight_decay_end: float | None, clip: float | None, final_lr: float
) -> None:
    from fastssl.train.engine import gradient_clip

    config = load_config(PIPELINES / path)
    defaults = methods.get(config.method).optimizer_defaults
    merged = merge_optimizer(defaults, to_dict(config)["optimizer"])
    assert merged.extra.get("weight_decay_end") == weight_decay_end
    assert gradient_clip(config) == clip
    assert merged.extra.get("final_lr") == final_lr


def test_simsiam_recipe_fixes_the_predictor_lr() -> None:
    config = load_config(PIPELINES / "simsiam.yaml")
    assert config.optimizer.extra == {"fix_predictor_lr": True}


def test_swav_frozen_prototypes_last_one_epoch() -> None:
    config = load_config(PIPELINES / "imagenet1k" / "swav.yaml")
    steps = TRAIN_IMAGES["imagenet1k"] // config.data.batch_size
    assert config.method_kwargs["n_steps_frozen_prototypes"] == steps


def test_imagenet1k_recipe_trains_two_steps_on_the_cpu(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "images", n=16, size=40)
    out = tmp_path / "out"
    code = main(
        [
            "pretrain", str(PIPELINES / "imagenet1k" / "simclr.yaml"), "--data", str(images),
            "--input-size", "32", "--batch-size", "8", "--max-steps", "2",
            "--accelerator", "cpu", "--precision", "32", "--no-compile", "--num-workers", "0",
            "--out", str(out), "--set", "method_kwargs.backbone=resnet18",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "simclr" and summary["steps"] == 2
    assert math.isfinite(summary["final_loss"])
    # The sqrt scaling of the recipe: 0.075 x sqrt(8) at batch 8.
    assert summary["peak_lr"] == pytest.approx(0.075 * math.sqrt(8))


def test_fashion_mnist_recipe_is_the_papers_with_the_measured_changes() -> None:
    """pipelines/fashion_mnist/simclr.yaml changes only what benchmarks/fashion_mnist.md
    measured (backbone, learning rate, views, warm-up, size, run length, memory format)."""
    paper = to_dict(load_config(PIPELINES / "simclr.yaml"))
    small = to_dict(load_config(PIPELINES / "fashion_mnist" / "simclr.yaml"))
    assert small["method"] == paper["method"] == "simclr"
    # LARS with the paper's scaling, momentum and weight decay, at lr 0.8 x B/256 (not 0.3).
    assert small["optimizer"] == {**paper["optimizer"], "lr": 0.8}
    assert paper["optimizer"]["lr"] == 0.3
    # The paper's temperature, which pipelines/simclr.yaml leaves to SimCLR's default.
    assert "temperature" not in paper["method_kwargs"]
    default = inspect.signature(methods.get("simclr")).parameters["temperature"].default
    assert small["method_kwargs"] == {"backbone": "timm:resnet18", "temperature": default}
    assert default == 0.1
    assert small["views"] == {"min_scale": 0.7, "cj_strength": 2.0}
    assert small["schedule"] == {**paper["schedule"], "warmup_epochs": 1}
    assert (small["data"]["input_size"], small["data"]["batch_size"]) == (32, 256)
    assert small["trainer"]["max_epochs"] == 10
    assert small["trainer"]["precision"] == paper["trainer"]["precision"]
    assert small["trainer"]["channels_last"] is True  # as every tuning run since the fifth round


def _engine_optimizer(path: Path, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer the engine builds for ``path``'s recipe, over ``model``'s parameters."""
    from fastssl.train.optim import build_optimizer, param_groups

    config = load_config(PIPELINES / path)
    defaults = methods.get(config.method).optimizer_defaults
    merged = merge_optimizer(defaults, to_dict(config)["optimizer"])
    lr = scaled_lr(merged.lr, config.data.batch_size, merged.reference_batch_size)
    groups = param_groups([model], merged.weight_decay, config.optimizer.exclude_norm_and_bias)
    return build_optimizer(groups, merged, lr)


@pytest.mark.parametrize("path", ["barlowtwins.yaml", "imagenet1k/barlowtwins.yaml"])
def test_barlow_twins_recipes_train_biases_and_norms_at_their_own_lr(path: str) -> None:
    # Zbontar et al. 2021, section 4: "a learning rate of 0.2 for the weights and 0.0048 for
    # the biases and batch normalization parameters [x batch / 256] ... The biases and batch
    # normalization parameters are excluded from LARS adaptation and weight decay."
    from fastssl.utils.lars import LARS

    config = load_config(PIPELINES / path)
    assert config.optimizer.extra == {"lr_biases": 0.0048}  # written out, with its source
    assert config.optimizer.exclude_norm_and_bias is True
    torch.manual_seed(0)
    model = methods.create("barlowtwins", backbone="resnet18", input_size=32, hidden_dim=16,
                           output_dim=16)  # fmt: skip
    optimizer = _engine_optimizer(Path(path), model)
    assert isinstance(optimizer, LARS)
    groups = {g["name"]: g for g in optimizer.param_groups}
    factor = config.data.batch_size / 256
    assert groups["decay"]["lr"] == pytest.approx(0.2 * factor)
    assert groups["decay"]["weight_decay"] == pytest.approx(1.5e-6)
    assert groups["no_decay"]["lr"] == pytest.approx(0.0048 * factor)
    assert groups["no_decay"]["weight_decay"] == 0.0
    bn = model.backbone.bn1
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert {id(bn.weight), id(bn.bias), id(model.projection_head.layers[6].bias)} <= no_decay
    assert id(model.backbone.conv1.weight) not in no_decay
    # One LARS step: biases and norms move by lr_biases x gradient (no trust ratio, no
    # decay); the weights by the trust-ratio-scaled step.
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    model.training_step(views).backward()
    before = {id(p): p.detach().clone() for p in model.parameters()}
    grads = {id(p): p.grad.detach().clone() for p in model.parameters() if p.grad is not None}
    optimizer.step()
    for param in (bn.weight, bn.bias):
        step = before[id(param)] - param.detach()
        torch.testing.assert_close(step, 0.0048 * factor * grads[id(param)])
    weight = model.backbone.conv1.weight
    plain = 0.2 * factor * (grads[id(weight)] + 1.5e-6 * before[id(weight)])
    assert not torch.allclose(before[id(weight)] - weight.detach(), plain)  # LARS-adapted


@pytest.mark.parametrize(
    "path",
    ["dino.yaml", "imagenet1k/dino_vits16.yaml", "imagenet100/dino_vits16.yaml",
     "imagenette/dino_vits16.yaml"],
)  # fmt: skip
def test_dino_vit_recipes_give_the_student_drop_path_and_evaluate_the_teacher(path: str) -> None:
    from fastssl.models.backbones import parse_timm_name

    config = load_config(PIPELINES / path)
    backbone = config.method_kwargs["backbone"]
    assert backbone.startswith("timm:")
    assert parse_timm_name(backbone[len("timm:") :]) == (
        "vit_small_patch16_224",
        {"drop_path_rate": 0.1},  # DINO's --drop_path_rate 0.1
    )
    assert methods.get(config.method).eval_network == "ema"  # --checkpoint_key teacher
    merged = merge_optimizer(methods.get("dino").optimizer_defaults, to_dict(config)["optimizer"])
    assert (merged.weight_decay, merged.extra["weight_decay_end"]) == (0.04, 0.4)


@pytest.mark.parametrize("folder", ["imagenet1k", "imagenet100", "imagenette"])
def test_swav_small_batch_recipes_queue_3840_features_from_epoch_15(folder: str) -> None:
    # SwAV's scripts/swav_200ep_bs256_pretrain.sh: --queue_length 3840 --epoch_queue_starts 15
    # (queue_length over all processes, as main_swav.py divides it by the world size).
    kwargs = load_config(PIPELINES / folder / "swav.yaml").method_kwargs
    assert (kwargs["queue_length"], kwargs["start_queue_at_epoch"]) == (3840, 15)
    assert kwargs["n_high_res_views"] == 2


def test_swav_large_batch_recipe_is_the_papers_800_epoch_script() -> None:
    # SwAV's scripts/swav_800ep_pretrain.sh: no queue, prototypes frozen 313 iterations,
    # base_lr 4.8 from start_warmup 0.3 over 10 epochs, final_lr 0.0048.
    config = load_config(PIPELINES / "swav.yaml")
    assert config.method_kwargs["queue_length"] == 0
    assert config.method_kwargs["n_steps_frozen_prototypes"] == 313
    assert (config.data.batch_size, config.optimizer.lr, config.trainer.max_epochs) == (
        4096, 4.8, 800,
    )  # fmt: skip
    assert config.schedule.warmup_epochs == 10
    assert 4.8 * config.schedule.warmup_start_factor == pytest.approx(0.3)
    assert 4.8 * config.schedule.end_factor == pytest.approx(0.0048)


@pytest.mark.parametrize("path", ["byol.yaml", "imagenet1k/byol.yaml"])
def test_byol_recipes_exclude_biases_and_norms_and_use_the_papers_loss(path: str) -> None:
    config = load_config(PIPELINES / path)
    assert config.optimizer.exclude_norm_and_bias is True
    assert "2 - 2 cos" in _header(PIPELINES / path)  # the loss scale, with its source
    torch.manual_seed(0)
    model = methods.create("byol", backbone="resnet18", input_size=32, hidden_dim=16,
                           output_dim=8)  # fmt: skip
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    loss = model.training_step(views).detach()  # step 0: the EMA copies the online network
    with torch.no_grad():
        p0, p1 = model.online(views[0]), model.online(views[1])
        t0, t1 = model.target(views[0]), model.target(views[1])
    cos = torch.nn.functional.cosine_similarity
    expected = (2 - 2 * cos(p0, t1)).mean() + (2 - 2 * cos(p1, t0)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
