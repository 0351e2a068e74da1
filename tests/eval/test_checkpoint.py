from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastssl.eval.checkpoint import CheckpointError, load_backbone, load_method, read_checkpoint
from tests.eval.conftest import save_checkpoint


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
