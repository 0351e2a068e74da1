from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastssl.eval.features import eval_transform, extract_features, open_labeled
from fastssl.eval.knn import knn_accuracy
from fastssl.kernels.contrastive import describe_kernel
from fastssl.models.small_conv import SmallOutputConv2d
from fastssl.train import engine
from fastssl.train.checkpoint import load_method, method_state_dict, read_checkpoint
from fastssl.train.config import PretrainConfig, apply_overrides
from fastssl.train.engine import (
    build_module,
    build_trainer,
    gradient_clip,
    pretrain,
    resolve_precision,
)
from fastssl.train.module import NonFiniteLossError
from fastssl.transforms.simclr_transform import SimCLRTransform
from tests.train._tiny import TINY, TinyMethod, make_folder, tiny_config


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"), n=16)


def _config(data: Path, out: Path, *overrides: str) -> PretrainConfig:
    return tiny_config(data, out, "data.batch_size=8", "trainer.max_epochs=2", *overrides)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return method_state_dict(read_checkpoint(path))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), atol=atol, rtol=0, msg=key)


def test_outputs_summary_metrics_and_checkpoint_contract(images: Path, tmp_path: Path) -> None:
    summary = pretrain(_config(images, tmp_path))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("method", "steps", "epochs", "final_loss", "images_per_s", "wall_s"):
        assert key in on_disk
    assert on_disk["data_wait_fraction"] == pytest.approx(summary["data_wait_fraction"])
    assert on_disk["method"] == TINY and on_disk["steps"] == 4 and on_disk["epochs"] == 2
    assert math.isfinite(on_disk["final_loss"]) and on_disk["images_per_s"] > 0
    assert 0.0 <= on_disk["data_wait_fraction"] <= 1.0
    assert on_disk["wall_s"] >= on_disk["train_s"] > 0

    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {"train/loss", "train/lr", "perf/images_per_s", "perf/data_wait_fraction"}
    assert logged <= set(rows[0])
    losses = [float(r["train/loss"]) for r in rows if r["train/loss"]]
    assert len(losses) == 4 and losses[-1] == pytest.approx(on_disk["final_loss"])
    lrs = [float(r["train/lr"]) for r in rows if r["train/lr"]]
    assert lrs[:2] == pytest.approx([0.1, 0.2])  # 1 warm-up epoch of 2 steps to 0.2

    checkpoint = read_checkpoint(tmp_path / "last.ckpt")
    hparams = checkpoint["hyper_parameters"]
    assert hparams["method"] == TINY
    assert hparams["method_kwargs"] == {"input_size": 8}
    json.dumps(hparams["method_kwargs"])  # JSON-serialisable
    assert all(k.startswith("method.") for k in checkpoint["state_dict"])
    assert "method.backbone.0.weight" in checkpoint["state_dict"]
    method = load_method(tmp_path / "last.ckpt")
    assert isinstance(method, TinyMethod) and not method.training
    _assert_same(method.state_dict(), method_state_dict(checkpoint), atol=0)
    fresh = TinyMethod(input_size=8)
    assert not torch.equal(fresh.state_dict()["head.weight"], method.state_dict()["head.weight"])
    features = method(torch.rand(2, 3, 8, 8))
    assert features.shape == (2, 8)


def test_load_method_rejects_foreign_checkpoints(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match=r"not a fastssl pretrain .*method, method_kwargs"):
        load_method(tmp_path / "x.ckpt")
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt"):
        load_method(tmp_path / "nope.ckpt")


def test_seed_makes_runs_reproducible(images: Path, tmp_path: Path) -> None:
    args = ("method_kwargs.random_aug=true", "trainer.max_epochs=1")
    pretrain(_config(images, tmp_path / "a", *args, "trainer.seed=3"))
    pretrain(_config(images, tmp_path / "b", *args, "trainer.seed=3"))
    pretrain(_config(images, tmp_path / "c", *args, "trainer.seed=4"))
    a, b, c = (_weights(tmp_path / name / "last.ckpt") for name in "abc")
    _assert_same(a, b, atol=0)
    assert not torch.equal(a["head.weight"], c["head.weight"])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_matches_uninterrupted_run(images: Path, tmp_path: Path, workers: int) -> None:
    # Random crops (in loader workers when workers > 0), 2 steps per epoch, 3 epochs.
    args = (
        "method_kwargs.random_aug=true",
        f"data.num_workers={workers}",
        "trainer.max_epochs=3",
        "trainer.checkpoint_every_n_steps=1",
        "trainer.keep_step_checkpoints=true",
    )
    full = tmp_path / "full"
    pretrain(_config(images, full, *args))
    expected = _weights(full / "last.ckpt")
    # step 2: epoch boundary; step 3: mid-epoch (1 of 2 batches of epoch 1 done).
    for step in (2, 3):
        out = tmp_path / f"resumed{step}"
        summary = pretrain(_config(images, out, *args), resume=str(full / f"step-{step:08d}.ckpt"))
        assert summary["steps"] == 6
        _assert_same(_weights(out / "last.ckpt"), expected, atol=1e-6)
        resumed = read_checkpoint(out / "last.ckpt")
        reference = read_checkpoint(full / "last.ckpt")
        moments = lambda ckpt: ckpt["optimizer_states"][0]["state"]  # noqa: E731
        for key, state in moments(reference).items():
            buffer = moments(resumed)[key]["momentum_buffer"]
            torch.testing.assert_close(buffer, state["momentum_buffer"], atol=1e-6, rtol=0)
        last_epoch = lambda ckpt: ckpt["lr_schedulers"][0]["last_epoch"]  # noqa: E731
        assert last_epoch(resumed) == last_epoch(reference) == 6


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(images: Path, tmp_path: Path) -> None:
    config = _config(
        images,
        tmp_path,
        "method_kwargs.nan_at_step=3",
        "trainer.checkpoint_every_n_steps=2",
    )
    with pytest.raises(NonFiniteLossError, match=r"the loss is nan at step 3 \(epoch 1\)"):
        pretrain(config)
    checkpoint = read_checkpoint(tmp_path / "last.ckpt")
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v.float()).all() for v in method_state_dict(checkpoint).values())
    assert not (tmp_path / "last.ckpt.tmp").exists()


def test_missing_or_empty_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data path .*nowhere.* does not exist"):
        pretrain(_config(tmp_path / "nowhere", tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty folder"):
        pretrain(_config(tmp_path / "empty", tmp_path / "out"))
    with pytest.raises(ValueError, match=r"data\.path is empty: pass --data"):
        pretrain(apply_overrides(PretrainConfig(), ["data.path="]))
    few = make_folder(tmp_path / "few", n=4)
    with pytest.raises(ValueError, match="too few images for one batch of 8"):
        pretrain(_config(few, tmp_path / "out"))


@pytest.mark.parametrize(
    ("views", "blur", "scale"),
    [([], 0.5, (0.08, 1.0)), (["views.gaussian_blur=0.0", "views.min_scale=0.3"], 0.0, (0.3, 1.0))],
)
def test_views_section_reaches_the_training_loader(
    images: Path, tmp_path: Path, views: list[str], blur: float, scale: tuple[float, float]
) -> None:
    config = _config(images, tmp_path, "method=simclr", "method_kwargs.backbone=resnet18", *views)
    loader = build_module(config).loader_factory()
    specs = loader.transform.view_specs
    assert [(s.crop_size, s.blur_prob, s.crop_scale) for s in specs] == [(8, blur, scale)] * 2


def test_bad_views_key_fails_before_training(images: Path, tmp_path: Path) -> None:
    config = _config(images, tmp_path, "method=simclr", "views.gausian_blur=0.0")
    with pytest.raises(ValueError, match=r"views\.gausian_blur: .*views\.gaussian_blur"):
        pretrain(config)
    assert not (tmp_path / "last.ckpt").exists()


def test_online_knn(images: Path, tmp_path: Path) -> None:
    # Non-square images (a crop and a squash give different features), and queries of one
    # class only: their labels must be the bank's "class1", not the first index.
    bank = make_folder(tmp_path / "bank", n=16)
    queries = make_folder(tmp_path / "queries", n=16)
    shutil.rmtree(queries / "class0")
    for path in [*bank.rglob("*.png"), *queries.rglob("*.png")]:
        Image.open(path).resize((12, 20)).save(path)
    summary = pretrain(
        _config(images, tmp_path, f"knn.train={bank}", f"knn.val={queries}", "knn.k=3")
    )
    with open(tmp_path / "metrics.csv") as f:
        values = [r["knn/top1"] for r in csv.DictReader(f) if r.get("knn/top1")]
    assert len(values) == 2  # one per epoch
    assert float(values[-1]) == pytest.approx(summary["knn_top1"])
    # The online score is `fastssl eval knn`'s: same transform, features and vote.
    backbone = load_method(tmp_path / "last.ckpt").backbone
    train = extract_features(backbone, open_labeled(bank, eval_transform(8)))
    val = extract_features(backbone, open_labeled(queries, eval_transform(8)))
    assert val.labels.unique().tolist() == [0]  # the folder's own indexing, before mapping
    expected = knn_accuracy(train.features, train.labels, val.features, val.labels + 1, 2, 3)
    assert summary["knn_top1"] == pytest.approx(expected)


def test_online_knn_query_class_unknown_to_the_bank_fails_before_training(
    images: Path, tmp_path: Path
) -> None:
    bank = make_folder(tmp_path / "bank", n=8)
    queries = make_folder(tmp_path / "queries", n=9, classes=3)
    with pytest.raises(ValueError, match="class2"):
        pretrain(_config(images, tmp_path, f"knn.train={bank}", f"knn.val={queries}"))
    assert not (tmp_path / "last.ckpt").exists()


def test_weight_decay_schedule_reaches_the_training_loop(images: Path, tmp_path: Path) -> None:
    pretrain(_config(images, tmp_path, "optimizer.extra.weight_decay_end=0.5"))
    groups = read_checkpoint(tmp_path / "last.ckpt")["optimizer_states"][0]["param_groups"]
    by_name = {g["name"]: g for g in groups}
    assert by_name["decay"]["weight_decay"] == pytest.approx(0.5)  # the last of the 4 steps
    assert by_name["no_decay"]["weight_decay"] == 0.0


@pytest.mark.parametrize(
    ("overrides", "clip"),
    [
        ((), None),  # TinyMethod's paper does not clip
        (("optimizer.extra.clip_grad_norm=2.0",), 2.0),  # a method default, as DINO's 3.0
        (("optimizer.extra.clip_grad_norm=2.0", "trainer.gradient_clip=1.0"), 1.0),
        (("trainer.gradient_clip=0.5",), 0.5),
    ],
)
def test_gradient_clip_takes_the_method_default_unless_given(
    images: Path, tmp_path: Path, overrides: tuple[str, ...], clip: float | None
) -> None:
    config = _config(images, tmp_path, *overrides)
    assert gradient_clip(config) == clip
    trainer, _ = build_trainer(config, tmp_path)
    assert trainer.gradient_clip_val == clip


@pytest.mark.parametrize(
    ("precision", "accelerator", "native", "expected"),
    [
        ("bf16-mixed", "cpu", False, "32-true"),
        ("bf16-true", "cpu", False, "32-true"),
        ("16-mixed", "cpu", False, "32-true"),
        ("bf16-mixed", "cpu", True, "bf16-mixed"),
        ("16-mixed", "cpu", True, "16-mixed"),
        ("32", "cpu", False, "32"),
        ("64", "cpu", False, "64"),
        ("bf16-mixed", "gpu", False, "bf16-mixed"),  # a GPU's bf16 is Lightning's business
    ],
)
def test_half_precision_without_native_cpu_support_trains_in_float32(
    precision: str, accelerator: str, native: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[torch.dtype] = []

    def supports(dtype: torch.dtype) -> bool:
        asked.append(dtype)
        return native

    monkeypatch.setattr(engine, "cpu_supports", supports)
    if expected == precision:
        assert resolve_precision(precision, accelerator) == expected
        return
    with pytest.warns(UserWarning, match=rf"trainer\.precision={precision}: .* 32-true instead"):
        assert resolve_precision(precision, accelerator) == expected
    assert asked == [torch.float16 if precision.startswith("16") else torch.bfloat16]


def test_trainer_and_summary_carry_the_resolved_precision(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "cpu_supports", lambda dtype: False)
    config = _config(images, tmp_path, "trainer.precision=bf16-mixed", "trainer.max_epochs=1")
    with pytest.warns(UserWarning, match="no native torch.bfloat16"):
        summary = pretrain(config)
    assert summary["precision"] == "32-true"
    weights = _weights(tmp_path / "last.ckpt")
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())


def test_cpu_supports_asks_onednn() -> None:
    assert engine.cpu_supports(torch.bfloat16) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert engine.cpu_supports(torch.float16) == torch.ops.mkldnn._is_mkldnn_fp16_supported()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], True),  # CPU training: on by default
        (["trainer.matmul_small_convs=false"], False),
        (["trainer.accelerator=gpu"], False),  # GPUs: cuDNN handles small maps
        (["trainer.accelerator=gpu", "trainer.matmul_small_convs=true"], True),
    ],
)
def test_matmul_small_convs_defaults_to_cpu_training(
    images: Path, tmp_path: Path, overrides: list[str], expected: bool
) -> None:
    config = _config(
        images, tmp_path, "method=simclr", "method_kwargs.backbone=resnet18", *overrides
    )
    assert engine.matmul_small_convs(config) is expected
    if "trainer.accelerator=gpu" in overrides:
        return  # building the module is the same code; the GPU itself is not needed here
    module = build_module(config)
    convs = [m for m in module.method.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, SmallOutputConv2d) is expected for m in convs)
    assert module.hparams["matmul_small_convs"] is expected


def test_summary_and_start_block_record_the_resolved_setup(images: Path, tmp_path: Path) -> None:
    blocks: list[str] = []
    summary = pretrain(_config(images, tmp_path, "trainer.max_steps=1"), announce=blocks.append)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    expected = {
        "data_backend": "torch",  # TinyMethod's views are torchvision callables
        "data_backend_fallback": False,
        "loss_kernel": describe_kernel("cpu"),
        "compile": False,  # CPU default
        "precision": "32-true",
        "matmul_small_convs": True,  # CPU default
    }
    assert {key: on_disk[key] for key in expected} == expected
    assert "no ViewSpecs" in on_disk["data_backend_reason"]
    assert summary["data_backend_reason"] == on_disk["data_backend_reason"]
    (block,) = blocks
    assert block.startswith("fastssl pretrain: setup")
    for line in ("data backend  torch (", "compile       off", "precision     32-true"):
        assert line in block
    assert f"loss kernel   {describe_kernel('cpu')}" in block
    assert "small convs   as matmuls" in block


def test_backend_fallback_is_announced(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpu = _config(images, tmp_path, "trainer.accelerator=gpu")
    monkeypatch.setattr("fastssl.data.engines.dali.pipeline.dali_available", lambda: False)
    choice = engine.choose_backend(gpu, SimCLRTransform(input_size=8))
    assert (choice.name, choice.fallback) == ("torch", True)
    assert "DALI is not installed" in choice.reason
    # The same choice on a CPU run: pretrain warns and marks the printed block.
    monkeypatch.setattr(engine, "choose_backend", lambda config, transform: choice)
    blocks: list[str] = []
    with pytest.warns(UserWarning, match="data backend torch: training on a GPU but NVIDIA DALI"):
        summary = pretrain(_config(images, tmp_path, "trainer.max_steps=1"), announce=blocks.append)
    assert summary["data_backend_fallback"] is True
    assert "torch [fallback]" in blocks[0]


def test_compile_defaults_to_gpu_training(images: Path, tmp_path: Path) -> None:
    assert engine.compile_enabled(_config(images, tmp_path)) is False
    assert engine.compile_enabled(_config(images, tmp_path, "trainer.accelerator=gpu")) is True
    off = _config(images, tmp_path, "trainer.accelerator=gpu", "trainer.compile=false")
    assert engine.compile_enabled(off) is False


def test_pretrain_and_profile_build_the_loader_through_one_function(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastssl.profile.loader import build_loader
    from fastssl.train import engine

    calls: list[tuple[int, int, dict[str, object]]] = []
    original = engine.build_training_loader

    def spy(
        config: PretrainConfig, transform: object, rank: int = 0, world: int = 1, **kw: object
    ) -> object:
        calls.append((rank, world, kw))
        return original(config, transform, rank, world, **kw)

    monkeypatch.setattr(engine, "build_training_loader", spy)
    config = _config(images, tmp_path, "trainer.max_steps=1", "data.label_key=none")
    pretrain(config)
    assert calls == [(0, 1, {})]  # the run's loader, every setting from the recipe
    transform = engine.build_module(config).method.default_transform()
    loader = build_loader(config, transform, workers=0, batch_size=4)
    assert len(calls) == 2 and calls[1][2]["batch_size"] == 4
    assert loader.batch_size == 4
