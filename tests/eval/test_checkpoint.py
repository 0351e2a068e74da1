from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastssl import methods
from fastssl.eval.checkpoint import (
    CheckpointError,
    load_backbone,
    load_method,
    read_checkpoint,
    select_backbone,
)
from tests.eval.conftest import save_checkpoint, save_method_checkpoint

#: The network each method's paper evaluates: DINO (eval_linear.py / eval_knn.py default to
#: --checkpoint_key teacher), MSN / PMSN (their logistic evaluation loads the target
#: encoder), DINOv2 (the teacher), I-JEPA (the target encoder) and CAPI (its student EMA)
#: the EMA copy; BYOL ("we only keep the encoder f_theta"), MoCo (main_lincls.py loads
#: encoder_q), DenseCL and TiCo the trained backbone. New EMA-evaluating methods go here.
PAPER_NETWORK = {
    "dino": "ema", "msn": "ema", "pmsn": "ema", "dinov2": "ema", "ijepa": "ema", "capi": "ema",
}  # fmt: skip


@pytest.mark.parametrize("name", methods.list_methods())
def test_every_method_evaluates_the_network_of_its_paper(name: str) -> None:
    cls = methods.get(name)
    assert cls.eval_network == PAPER_NETWORK.get(name, "online")
    if cls.eval_network == "ema":
        assert cls.ema_backbone_attr is not None


@pytest.mark.parametrize(
    ("name", "network", "expected"),
    [
        ("dino", "auto", "ema"), ("dino", "online", "online"), ("dino", "ema", "ema"),
        ("byol", "auto", "online"), ("byol", "ema", "ema"), ("moco", "auto", "online"),
    ],
)  # fmt: skip
def test_load_backbone_picks_the_papers_network(
    name: str, network: str, expected: str, tmp_path: Path
) -> None:
    path, model = save_method_checkpoint(tmp_path / f"{name}.ckpt", name)
    backbone, _, _ = load_backbone(path, network)
    reference = model.ema_backbone() if expected == "ema" else model.backbone
    assert reference is not None
    assert torch.equal(backbone.conv1.weight, reference.conv1.weight)
    other = model.backbone if expected == "ema" else model.ema_backbone()
    assert other is not None and not torch.equal(backbone.conv1.weight, other.conv1.weight)
    assert select_backbone(load_method(path)[0], network)[1] == expected


def test_select_backbone_errors(tmp_path: Path, tiny_registered: None) -> None:
    model, _ = load_method(save_checkpoint(tmp_path / "a.ckpt")[0])
    assert select_backbone(model)[1] == "online"
    with pytest.raises(ValueError, match=r"--network ema: method 'tiny' keeps no EMA copy"):
        select_backbone(model, "ema")
    with pytest.raises(ValueError, match=r"--network 'student' is unknown"):
        select_backbone(model, "student")


def test_load_backbone_restores_weights_and_sizes(tmp_path: Path, tiny_registered: None) -> None:
    path, model = save_checkpoint(tmp_path / "a.ckpt", backbone="tiny", input_size=20)
    backbone, dim, size = load_backbone(path)
    assert (dim, size) == (8, 20)
    assert not backbone.training
    expected = model.backbone.state_dict()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, expected[key]), key
    images = torch.randn(3, 3, 20, 20)
    assert torch.equal(backbone(images), model.backbone.eval()(images))


def test_compiled_backbone_keys_are_accepted(tmp_path: Path, tiny_registered: None) -> None:
    path, model = save_checkpoint(tmp_path / "a.ckpt")
    data = torch.load(path, weights_only=False)
    data["state_dict"] = {
        k.replace("method.backbone.", "method.backbone._orig_mod."): v
        for k, v in data["state_dict"].items()
    }
    torch.save(data, path)
    backbone, _, _ = load_backbone(path)
    assert torch.equal(backbone.state_dict()["0.weight"], model.backbone.state_dict()["0.weight"])


def test_read_checkpoint_fields(tmp_path: Path) -> None:
    path, model = save_checkpoint(tmp_path / "a.ckpt", backbone="tiny", proj_dim=3)
    info = read_checkpoint(path)
    assert (info.method, info.backbone_name) == ("tiny", "tiny")
    assert info.method_kwargs == {"backbone": "tiny", "proj_dim": 3}
    assert set(info.state_dict) == set(model.state_dict())


def _rewrite(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    data = torch.load(path, weights_only=False)
    torch.save(edit(data), path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: {"epoch": 1, "state_dict": d["state_dict"]},
            r"has keys \['epoch', 'state_dict'\]",
        ),
        (lambda d: [1, 2], "holds a list"),
        (lambda d: {**d, "hyper_parameters": {"lr": 1}}, r"hyper_parameters\['method'\] is None"),
        (
            lambda d: {**d, "state_dict": {k[7:]: v for k, v in d["state_dict"].items()}},
            "no 'method.' weights",
        ),
        (
            lambda d: {**d, "hyper_parameters": {"method": "nonsense", "method_kwargs": {}}},
            "unknown method 'nonsense'",
        ),
        (
            lambda d: {**d, "hyper_parameters": {"method": "tiny", "method_kwargs": {"bad": 1}}},
            "cannot be built from method_kwargs",
        ),
        (
            lambda d: {
                **d,
                "hyper_parameters": {"method": "tiny", "method_kwargs": {"proj_dim": 5}},
            },
            "do not fit method 'tiny'",
        ),
        (
            lambda d: {**d, "state_dict": {**d["state_dict"], "method.extra": torch.zeros(1)}},
            r"unexpected \['extra'\]",
        ),
    ],
)
def test_wrong_format_names_the_file(
    tmp_path: Path,
    tiny_registered: None,
    edit,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    path, _ = save_checkpoint(tmp_path / "bad.ckpt")
    _rewrite(path, edit)
    with pytest.raises(CheckpointError, match=message) as info:
        load_method(path)
    assert str(path) in str(info.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.ckpt.*does not exist"):
        load_backbone(tmp_path / "nope.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.ckpt.*cannot be read"):
        load_backbone(garbage)
    assert issubclass(CheckpointError, ValueError)


def test_backbone_name_defaults_to_the_methods_default(
    tmp_path: Path, tiny_registered: None
) -> None:
    path, _ = save_checkpoint(tmp_path / "a.ckpt")  # method_kwargs without "backbone"
    assert read_checkpoint(path).backbone_name == "?"  # unknown before the class is resolved
    assert load_method(path)[1].backbone_name == "tiny"  # TinyMethod's default


def test_method_given_as_module_path(tmp_path: Path) -> None:
    path, model = save_checkpoint(tmp_path / "a.ckpt")
    _rewrite(path, lambda d: {**d, "hyper_parameters": {
        "method": "tests.eval.conftest:TinyMethod", "method_kwargs": {}}})  # fmt: skip
    backbone, dim, _ = load_backbone(path)  # no registration needed
    assert dim == 8 and torch.equal(backbone[0].weight, model.backbone[0].weight)
    for method, message in [
        ("tests.eval.conftest:COLORS", "does not name a fastssl.methods.Method subclass"),
        ("no_such_package.x:Y", "No module named 'no_such_package'"),
    ]:
        _rewrite(path, lambda d, m=method: {**d, "hyper_parameters": {  # type: ignore[misc]
            "method": m, "method_kwargs": {}}})  # fmt: skip
        with pytest.raises(CheckpointError, match=message):
            load_backbone(path)


def test_exported_state_dict_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "exported.pt"
    torch.save({"conv.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"exported\.pt' is a bare state_dict of 1 tensors"):
        load_backbone(path)
