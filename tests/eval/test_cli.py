from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from fastssl import cli, methods
from tests.eval.conftest import make_folder, save_checkpoint, save_method_checkpoint

BASE = ["--workers", "0", "--quiet", "--batch-size", "8"]


@pytest.fixture
def data(tmp_path: Path) -> tuple[str, str]:
    train = make_folder(tmp_path / "train", per_class=8)
    val = make_folder(tmp_path / "val", per_class=4, seed=1)
    return str(train), str(val)


@pytest.fixture
def ckpt(tmp_path: Path, tiny_registered: None) -> str:
    return str(save_checkpoint(tmp_path / "tiny.ckpt")[0])


def _eval(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["eval", *argv, *BASE])
    out, err = capsys.readouterr()
    return code, out, err


def test_knn_separable_colors_and_json(
    ckpt: str, data: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "out" / "knn.json"
    argv = ["knn", "--checkpoint", ckpt, "--train", data[0], "--val", data[1], "--k", "10"]
    code, out, err = _eval([*argv, "--json", str(report_path)], capsys)
    assert code == 0, err
    assert "kNN Top1" in out and "1.000" in out and "Linear Top1" not in out
    report = json.loads(report_path.read_text())
    assert report["results"]["knn"]["top1"] == 1.0
    assert report["results"]["knn"]["k"] == 10 and report["results"]["knn"]["temperature"] == 0.1
    assert {k: report[k] for k in ("method", "backbone", "feature_dim", "input_size")} == {
        "method": "tiny", "backbone": "tiny", "feature_dim": 8, "input_size": 16,
    }  # fmt: skip
    assert (report["num_train"], report["num_val"], report["num_classes"]) == (24, 12, 3)
    assert report["checkpoint"] == ckpt and report["seed"] == 0 and report["device"] == "cpu"


@pytest.mark.parametrize("resize", [None, 24])
def test_resize_reaches_the_features(
    resize: int | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Raw pixels of 16 px images: the top-left corner is black unless --resize crops it away.
    from PIL import Image

    for split, n in (("train", 4), ("val", 2)):
        for label in ("a", "b"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                image = Image.new("RGB", (32, 32), (255, 255, 255))
                image.paste((0, 0, 0) if label == "a" else (255, 255, 255), (0, 0, 4, 4))
                image.save(folder / f"{i}.png")
    report_path = tmp_path / "report.json"
    argv = ["knn", "--checkpoint", "pixels", "--input-size", "16", "--k", "2"]
    argv += ["--train", str(tmp_path / "train"), "--val", str(tmp_path / "val")]
    argv += ["--json", str(report_path)] + (["--resize", str(resize)] if resize else [])
    code, _, err = _eval(argv, capsys)
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["resize"] == resize
    # Without --resize the black corner separates the classes; 24 -> crop 16 cuts it off.
    assert report["results"]["knn"]["top1"] == (1.0 if resize is None else 0.5)


def test_knn_with_shuffled_labels_is_near_chance(
    ckpt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(0)
    names = ("a", "b")

    def shuffled(i: int, color: str) -> str:
        return rng.choice(names)

    train = make_folder(tmp_path / "train", per_class=20, label_of=shuffled)
    val = make_folder(tmp_path / "val", per_class=20, seed=1, label_of=shuffled)
    report_path = tmp_path / "r.json"
    code, _, err = _eval(
        ["knn", "--checkpoint", ckpt, "--train", str(train), "--val", str(val),
         "--json", str(report_path)], capsys,
    )  # fmt: skip
    assert code == 0, err
    top1 = json.loads(report_path.read_text())["results"]["knn"]["top1"]
    assert 0.25 <= top1 <= 0.75  # chance is 0.5; the colour-separable case above gives 1.0


def test_all_modes_share_one_table(
    ckpt: str, data: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "all.json"
    code, out, err = _eval(
        ["finetune", "knn", "linear", "--checkpoint", ckpt, "--train", data[0], "--val",
         data[1], "--epochs", "2", "--json", str(report_path)], capsys,
    )  # fmt: skip
    assert code == 0, err
    header = out.splitlines()[0]
    assert header.index("Linear Top1") < header.index("Finetune Top1") < header.index("kNN Top1")
    results = json.loads(report_path.read_text())["results"]
    # lightly's linear_eval.py: augmented images (RandomResizedCrop 0.08-1 + flip), SGD at
    # 0.1 x B/256 without weight decay, no BatchNorm; scored every epoch.
    linear = results["linear"]
    assert linear["epochs"] == 2 and len(linear["losses"]) == 2 and len(linear["val_top1"]) == 2
    assert linear["augment"] is True and linear["min_scale"] == 0.08
    assert linear["base_lr"] == 0.1 and linear["lr"] == pytest.approx(0.1 * 8 / 256)
    assert linear["weight_decay"] == 0.0 and linear["batch_norm"] is False
    assert linear["best_top1"] == max(linear["val_top1"]) >= linear["top1"]
    # lightly's resnet50/finetune_eval.py for a CNN: SGD 0.05 x B/256, no weight decay.
    finetune = results["finetune"]
    assert finetune["recipe"] == "simclr" and finetune["epochs"] == 2
    assert finetune["optimizer"] == "sgd" and finetune["lr"] == 0.05
    assert finetune["peak_lr"] == pytest.approx(0.05 * 8 / 256)
    assert finetune["weight_decay"] == 0.0 and finetune["backbone_lr_scale"] == 1.0
    assert finetune["min_scale"] == 0.08 and finetune["mixup"] == 0.0
    for mode in ("linear", "finetune", "knn"):
        assert 0.0 <= results[mode]["top1"] <= results[mode]["top5"] <= 1.0


@pytest.mark.parametrize("augment", [True, False])
def test_linear_learns_the_colours_with_and_without_augmentation(
    augment: bool, ckpt: str, data: tuple[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    report_path = tmp_path / "linear.json"
    argv = ["linear", "--checkpoint", ckpt, "--train", data[0], "--val", data[1]]
    argv += ["--epochs", "8", "--lr", "25.6", "--batch-norm", "--json", str(report_path)]
    code, _, err = _eval([*argv, *([] if augment else ["--no-augment"])], capsys)
    assert code == 0, err
    linear = json.loads(report_path.read_text())["results"]["linear"]
    assert linear["augment"] is augment and linear["batch_norm"] is True
    assert linear["lr"] == pytest.approx(0.8)  # 25.6 x 8 / 256
    assert linear["best_top1"] > 0.95


def test_min_scale_reaches_the_finetune_crops(
    ckpt: str, data: tuple[str, str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import importlib

    finetune_module = importlib.import_module("fastssl.eval.finetune")  # the module

    seen: list[float] = []
    real = finetune_module.train_transform

    def spy(input_size: int, min_scale: float = 0.08):  # type: ignore[no-untyped-def]
        seen.append(min_scale)
        return real(input_size, min_scale)

    monkeypatch.setattr(finetune_module, "train_transform", spy)
    argv = ["finetune", "--checkpoint", ckpt, "--train", data[0], "--val", data[1]]
    code, _, err = _eval([*argv, "--epochs", "1"], capsys)
    assert code == 0, err
    code, _, err = _eval([*argv, "--epochs", "1", "--min-scale", "0.3"], capsys)
    assert code == 0, err
    assert seen == [0.08, 0.3]  # lightly's T.RandomResizedCrop(224) by default


@pytest.mark.parametrize(("spec", "dim"), [("pixels", 3 * 16 * 16), ("random:resnet18", 512)])
def test_baselines(
    spec: str, dim: int, data: tuple[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    report_path = tmp_path / "b.json"
    code, _, err = _eval(
        ["knn", "--checkpoint", spec, "--input-size", "16", "--train", data[0], "--val",
         data[1], "--json", str(report_path)], capsys,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["feature_dim"] == dim and report["method"] in ("pixels", "random")
    assert report["results"]["knn"]["top1"] == 1.0  # colours separate even without training


def test_random_baseline_is_seeded() -> None:
    from fastssl.eval.cli import resolve_model

    a, b = (resolve_model("random:resnet18", 16, seed=1) for _ in range(2))
    c = resolve_model("random:resnet18", 16, seed=2)
    assert torch.equal(a.backbone.conv1.weight, b.backbone.conv1.weight)
    assert not torch.equal(a.backbone.conv1.weight, c.backbone.conv1.weight)


@pytest.mark.parametrize(("name", "network"), [("dino", "ema"), ("byol", "online")])
def test_network_defaults_to_the_one_the_paper_evaluates(
    name: str, network: str, data: tuple[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from fastssl.eval.cli import resolve_model

    path, model = save_method_checkpoint(tmp_path / f"{name}.ckpt", name)
    chosen = resolve_model(str(path), None)
    expected = model.ema_backbone() if network == "ema" else model.backbone
    assert expected is not None and chosen.network == network
    assert torch.equal(chosen.backbone.conv1.weight, expected.conv1.weight)
    report_path = tmp_path / "r.json"
    argv = ["knn", "--checkpoint", str(path), "--train", data[0], "--val", data[1]]
    code, _, err = _eval([*argv, "--json", str(report_path)], capsys)
    assert code == 0, err
    assert json.loads(report_path.read_text())["network"] == network


def test_finetune_trains_dinos_frozen_teacher(
    data: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, model = save_method_checkpoint(tmp_path / "dino.ckpt", "dino")
    assert not any(p.requires_grad for p in model.teacher_backbone.parameters())  # an EMA copy
    report_path = tmp_path / "ft.json"
    argv = ["finetune", "--checkpoint", str(path), "--train", data[0], "--val", data[1]]
    code, _, err = _eval([*argv, "--epochs", "1", "--json", str(report_path)], capsys)
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["network"] == "ema" and report["results"]["finetune"]["recipe"] == "simclr"


@pytest.mark.parametrize("network", ["online", "ema"])
def test_network_picks_the_online_or_the_ema_backbone(network: str, tmp_path: Path) -> None:
    from fastssl.eval.cli import resolve_model

    torch.manual_seed(0)
    kwargs = {"backbone": "resnet18", "input_size": 16, "hidden_dim": 32, "output_dim": 16}
    byol = methods.create("byol", **kwargs)
    with torch.no_grad():  # the EMA copy drifts from the online backbone during training
        byol.backbone_momentum.conv1.weight.add_(1.0)
    path = tmp_path / "byol.ckpt"
    state = {f"method.{k}": v for k, v in byol.state_dict().items()}
    hparams = {"method": "byol", "method_kwargs": kwargs}
    torch.save({"hyper_parameters": hparams, "state_dict": state, "global_step": 1}, path)
    chosen = resolve_model(str(path), None, network=network).backbone
    expected = byol.backbone_momentum if network == "ema" else byol.backbone
    assert torch.equal(chosen.conv1.weight, expected.conv1.weight)
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(chosen.eval()(images), expected.eval()(images))


def test_help_documents_the_baselines(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "random:<backbone>" in out and "pixels" in out and "--temperature" in out
    # The protocols: lightly's resize 256 + centre crop 224, augmented linear probe, the
    # two fine-tune recipes and the paper's network.
    for text in ("resized to 256 and centre-cropped to 224", "0.1 x B/256", "--no-augment",
                 "--finetune-recipe", "layer-wise lr decay 0.65", "mixup 0.8",
                 "for DINO (its teacher)", "--layer-decay", "--drop-path",
                 "--batch-norm"):  # fmt: skip
        assert text in " ".join(out.split()), text


def _bad_checkpoint(tmp_path: Path) -> str:
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    return str(path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_checkpoint", r"checkpoint '.*missing.ckpt' does not exist"),
        ("wrong_format", r"checkpoint '.*weights.pt' is a bare state_dict"),
        (
            "unknown_val_class",
            r"val2' has 1 classes that the training set does not have \('purple'\)",
        ),
        ("empty_train", r"empty' is an empty folder"),
        ("missing_val", r"data path '.*nowhere' does not exist"),
        ("pixels_without_size", "--checkpoint pixels needs --input-size"),
        ("pixels_finetune", "pixels has no weights to fine-tune"),
        ("unknown_backbone", "unknown backbone 'resnet7'"),
        ("ema_without_copy", r"--network ema: method 'tiny' keeps no EMA copy .*online"),
        ("ema_of_a_baseline", "--network ema needs a checkpoint: pixels has no EMA"),
        ("resize_below_the_crop", r"resize=8 is below input_size=16"),
    ],
)
def test_bad_inputs_give_clear_errors(
    case: str, message: str, ckpt: str, data: tuple[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    train, val = data
    mode, checkpoint, extra = "knn", ckpt, []
    if case == "missing_checkpoint":
        checkpoint = str(tmp_path / "missing.ckpt")
    elif case == "wrong_format":
        checkpoint = _bad_checkpoint(tmp_path)
    elif case == "unknown_val_class":
        val = str(make_folder(tmp_path / "val2", 1, classes=("red",)))
        (tmp_path / "val2" / "red").rename(tmp_path / "val2" / "purple")
    elif case == "empty_train":
        (tmp_path / "empty").mkdir()
        train = str(tmp_path / "empty")
    elif case == "missing_val":
        val = str(tmp_path / "nowhere")
    elif case == "pixels_without_size":
        checkpoint = "pixels"
    elif case == "pixels_finetune":
        mode, checkpoint, extra = "finetune", "pixels", ["--input-size", "8"]
    elif case == "unknown_backbone":
        checkpoint, extra = "random:resnet7", ["--input-size", "8"]
    elif case == "ema_without_copy":
        extra = ["--network", "ema"]
    elif case == "ema_of_a_baseline":
        checkpoint, extra = "pixels", ["--input-size", "8", "--network", "ema"]
    elif case == "resize_below_the_crop":
        extra = ["--resize", "8"]
    code, out, err = _eval(
        [mode, "--checkpoint", checkpoint, "--train", train, "--val", val, *extra], capsys
    )
    assert code == 2 and out == ""
    assert err.startswith("fastssl eval: error: ")
    assert __import__("re").search(message, err), err


def test_bad_option_values_are_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["eval", "knn", "--checkpoint", "x", "--train", "a", "--val", "b", "--k", "0"])
    assert info.value.code == 2
    assert "'0' must be at least 1" in capsys.readouterr().err


def test_knn_and_linear_from_shards_with_workers(
    ckpt: str, data: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastssl.data.shards import ShardSettings, convert

    for name, folder in zip(("train", "val"), data, strict=True):
        convert(folder, tmp_path / f"{name}_shards", ShardSettings(max_count=7), workers=1)
    report_path = tmp_path / "shards.json"
    code = cli.main(
        ["eval", "knn", "linear", "--checkpoint", ckpt, "--train", str(tmp_path / "train_shards"),
         "--val", str(tmp_path / "val_shards"), "--k", "10", "--epochs", "5", "--workers", "2",
         "--quiet", "--batch-size", "8", "--lr", "25.6", "--batch-norm",
         "--json", str(report_path)],
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert (report["num_train"], report["num_val"]) == (24, 12)  # every sample, once
    assert report["results"]["knn"]["top1"] == 1.0
    assert report["results"]["linear"]["best_top1"] > 0.95


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_checkpoint_is_refused_naming_it(
    value: float,
    data: tuple[str, str],
    tmp_path: Path,
    tiny_registered: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = save_checkpoint(tmp_path / "diverged.ckpt")
    state = torch.load(path, weights_only=True)
    state["state_dict"]["method.backbone.1.running_var"].fill_(value)  # a diverged BatchNorm
    torch.save(state, path)
    argv = ["knn", "--checkpoint", str(path), "--train", data[0], "--val", data[1]]
    code, out, err = _eval(argv, capsys)
    assert code == 2 and "kNN Top1" not in out
    assert "diverged.ckpt" in err and "NaN or infinite values" in err
    assert cli.main(["export", str(path), "--out", str(tmp_path / "b.pt")]) == 2
    assert "NaN or infinite values" in capsys.readouterr().err
    assert not (tmp_path / "b.pt").exists()
