from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from fastssl.cli import main
from fastssl.train.checkpoint import method_state_dict, read_checkpoint
from fastssl.train.config import PretrainConfig
from tests.train._tiny import TINY, make_folder

HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "pipelines").glob("*.yaml"))
METHODS = [
    "aim", "barlowtwins", "byol", "capi", "dcl", "dclw", "densecl", "detconb", "detcons", "dino",
    "dinov2", "directclr", "fastsiam", "ijepa", "lejepa", "mae", "mmcr", "moco", "msn",
    "nnclr", "pmsn", "simclr", "simmim", "simsiam", "smog", "swav", "tico", "vicreg", "vicregl",
    "wmse",
]  # fmt: skip


#: Smaller heads for the 2-step CPU runs (the backbone is shrunk for every method).
TINY_HEADS: dict[str, list[str]] = {
    "aim": ["head_hidden_dim=32", "head_num_blocks=1"],
    # 8192-wide projectors write 1.2 GB checkpoints: two steps need no such width.
    "barlowtwins": ["hidden_dim=64", "output_dim=64"],
    "vicreg": ["hidden_dim=64", "output_dim=64"],
    # A 2 x 2 patch grid at 32 px: one-patch blocks, so min_keep 0.
    "ijepa": [
        "predictor_embed_dim=24",
        "predictor_depth=1",
        "pred_mask_scale=[0.25,0.3]",
        "min_keep=0",
        "num_pred_masks=1",
    ],
    "lejepa": ["hidden_dim=32", "output_dim=16", "n_local_views=2", "sigreg_num_vectors=64"],
    "mae": ["decoder_dim=32", "decoder_depth=1", "decoder_num_heads=2"],
    "msn": ["hidden_dim=32", "output_dim=16", "n_prototypes=8", "focal_views=2"],
    "pmsn": ["hidden_dim=32", "output_dim=16", "n_prototypes=8", "focal_views=2"],
    "dino": ["hidden_dim=32", "bottleneck_dim=16", "output_dim=64", "n_local_views=2"],
    "dinov2": ["hidden_dim=32", "bottleneck_dim=16", "output_dim=64", "n_local_views=2"],
    "capi": ["num_clusters=64", "predictor_depth=1", "predictor_num_heads=2"],
    "vicregl": ["hidden_dim=64", "output_dim=64", "n_local_views=2"],
    "mmcr": ["hidden_dim=32", "output_dim=16"],
    "smog": ["hidden_dim=64", "n_groups=16", "memory_bank_size=64"],
    "wmse": ["hidden_dim=32", "output_dim=2", "w_size=4"],
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"), n=16, size=40)


def _recipe(tmp_path: Path, **method_kwargs: object) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "method": TINY,
                "method_kwargs": method_kwargs,
                "data": {"input_size": 8, "num_workers": 0, "batch_size": 8},
                "trainer": {"accelerator": "cpu", "log_every_n_steps": 1},
            }
        )
    )
    return path


def test_every_method_has_a_recipe() -> None:
    assert [p.stem for p in RECIPES] == METHODS


@pytest.mark.parametrize("name", METHODS)
def test_recipe_trains_two_steps(name: str, images: Path, tmp_path: Path) -> None:
    recipe = yaml.safe_load((ROOT / "pipelines" / f"{name}.yaml").read_text())
    assert recipe["method"] == name
    for key in ("lr", "weight_decay", "name", "reference_batch_size"):
        assert recipe["optimizer"][key] is not None
    assert recipe["data"]["input_size"] == 224 and recipe["trainer"]["max_epochs"] >= 100
    backbone = recipe["method_kwargs"]["backbone"]
    tiny = "timm:vit_tiny_patch16_224" if "vit" in backbone else "resnet18"
    out = tmp_path / "out"
    code = main(
        [
            "pretrain", str(ROOT / "pipelines" / f"{name}.yaml"), "--data", str(images),
            "--input-size", "32", "--batch-size", "4", "--max-steps", "2", "--accelerator",
            "cpu", "--precision", "32", "--no-compile", "--out", str(out),
            "--num-workers", "0", "--set", f"method_kwargs.backbone={tiny}",
            *(f"--set=method_kwargs.{kv}" for kv in TINY_HEADS.get(name, [])),
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == name and summary["steps"] == 2
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
    hparams = read_checkpoint(out / "last.ckpt")["hyper_parameters"]
    assert hparams["method"] == name and hparams["method_kwargs"]["backbone"] == tiny


def test_cli_errors_exit_2_with_message(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _recipe(tmp_path)
    assert main(["pretrain", str(recipe), "--data", str(images), "--set", "trainer.sed=1"]) == 2
    assert "unknown key 'trainer.sed' (did you mean 'trainer.seed'?)" in capsys.readouterr().err
    assert main(["pretrain", str(recipe), "--data", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    args = ["pretrain", str(recipe), "--data", str(images), "--set", "method_kwargs.nan_at_step=0"]
    assert main([*args, "--out", str(tmp_path / "nan")]) == 3  # non-finite: its own code
    assert "the loss is nan at step 0" in capsys.readouterr().err


def test_help_lists_every_recipe_section(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    lines = capsys.readouterr().out.splitlines()
    sections = [f.name for f in dataclasses.fields(PretrainConfig)]
    listed = [line.split()[0] for line in lines if line.startswith("  ") and line.split()]
    assert all(section in listed for section in sections), (sections, listed)


@pytest.mark.parametrize(
    "needle",
    [
        "--accumulate-grad-batches N",
        "--logger {csv,tensorboard,wandb}",
        "accumulate_grad_batches",
        "WANDB_MODE=offline",
        "linear/top1",
        "rank 0 alone prints",
    ],
)
def test_help_documents_accumulation_loggers_probe_and_ranks(
    capsys: pytest.CaptureFixture[str], needle: str
) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert needle in " ".join(capsys.readouterr().out.split())


@pytest.mark.dist
def test_two_processes_match_one_process_on_the_global_batch(images: Path, tmp_path: Path) -> None:
    """gloo DDP, 2 processes x 4 images (sync BN, gathered NT-Xent) == 1 process x 8 images.

    Deterministic by construction: TinyMethod's default transform has no randomness
    (resize; resize + flip), and each rank reads a disjoint half of the same seeded
    permutation, so both runs train on the same 8 images per step. Sync BatchNorm and
    the gather make the loss and its gradient independent of how the batch is split.
    """
    recipe = _recipe(tmp_path)
    common = [
        "pretrain", str(recipe), "--data", str(images), "--batch-size", "8", "--max-epochs",
        "2", "--accelerator", "cpu", "--seed", "5",
    ]  # fmt: skip
    assert main([*common, "--devices", "1", "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "fastssl", *common, "--devices", "2", "--out", f"{tmp_path}/two"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one = method_state_dict(read_checkpoint(tmp_path / "one" / "last.ckpt"))
    two = method_state_dict(read_checkpoint(tmp_path / "two" / "last.ckpt"))
    for key in one:
        torch.testing.assert_close(two[key].float(), one[key].float(), atol=1e-5, rtol=0, msg=key)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    start = read_checkpoint(tmp_path / "one" / "last.ckpt")
    assert not torch.equal(start["state_dict"]["method.head.weight"], torch.zeros(8, 8))


def test_pretrain_prints_the_setup_before_training(
    images: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = ["pretrain", str(_recipe(tmp_path)), "--data", str(images), "--max-steps", "1"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    captured = capfd.readouterr()
    out = captured.out
    # A first run reads cleanly: no Lightning banners, tips or save-format notes.
    for noise in ("GPU available", "TPU available", "Tip:", "`weights_only` was not set"):
        assert noise not in out + captured.err, noise
    setup, done = out.index("fastssl pretrain: setup"), out.index("fastssl pretrain: tests")
    assert setup < done  # printed at the start, once
    assert out.count("fastssl pretrain: setup") == 1
    for line in ("data backend  torch (", "loss kernel", "compile       off", "precision", "small"):
        assert line in out[setup:done]


@pytest.mark.parametrize("debug", [False, True])
def test_a_run_reads_cleanly_unless_debugging(images: Path, tmp_path: Path, debug: bool) -> None:
    # A real process: Lightning attaches its console handler only outside pytest.
    root = Path(__file__).resolve().parents[2]
    command = [
        sys.executable, "-m", "fastssl", *(["--debug"] if debug else []), "pretrain",
        str(_recipe(tmp_path)), "--data", str(images), "--max-steps", "1",
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    assert "fastssl pretrain: setup" in printed
    # Lightning's banners and tips, and its note on the save format, are not the user's to act
    # on; --debug shows them (so this test can see them at all).
    noise = ["GPU available", "TPU available", "Tip:"]
    assert [line for line in noise if line in printed] == (noise if debug else [])
    assert "`weights_only` was not set" not in printed


def _tiny_run(recipe: Path, images: Path, out: Path, *flags: str) -> int:
    return main(["pretrain", str(recipe), "--data", str(images), "--out", str(out), *flags])


def test_rerun_resumes_keeps_metrics_and_a_finished_run_exits_0(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, out = _recipe(tmp_path), tmp_path / "run"
    assert _tiny_run(recipe, images, out, "--max-steps", "2") == 0
    first = json.loads((out / "summary.json").read_text())
    # A requeued / repeated job continues (--resume auto is the default).
    assert _tiny_run(recipe, images, out, "--max-steps", "4") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["resumed_from"] == str(out / "last.ckpt")
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len([r for r in rows[1:] if r.strip()]) >= 4 > first["steps"]
    # The same command again: nothing left to train, files untouched, exit 0.
    before = (out / "last.ckpt").read_bytes(), (out / "summary.json").read_text()
    capsys.readouterr()
    assert _tiny_run(recipe, images, out, "--max-steps", "4") == 0
    assert "already finished (4 steps" in capsys.readouterr().out
    assert ((out / "last.ckpt").read_bytes(), (out / "summary.json").read_text()) == before


def test_a_new_run_refuses_an_old_run_unless_overwrite(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, out = _recipe(tmp_path), tmp_path / "run"
    assert _tiny_run(recipe, images, out, "--max-steps", "2") == 0
    capsys.readouterr()
    assert _tiny_run(recipe, images, out, "--max-steps", "1", "--resume", "never") == 2
    err = capsys.readouterr().err
    assert "holds a checkpoint (last.ckpt)" in err and "--overwrite" in err
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert _tiny_run(recipe, images, out, "--max-steps", "1", "--overwrite") == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 1
    assert read_checkpoint(out / "last.ckpt")["global_step"] == 1


@pytest.mark.parametrize("flag", ["--max-steps", "--max-epochs"])
def test_zero_steps_is_a_user_error(
    flag: str, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert _tiny_run(_recipe(tmp_path), images, out, flag, "0") == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert not (out / "last.ckpt").exists() and not (out / "summary.json").exists()


def test_summary_is_strict_json(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _tiny_run(_recipe(tmp_path), images, out, "--max-steps", "1") == 0

    def refuse(name: str) -> None:
        raise AssertionError(f"summary.json holds {name}")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    assert Path(summary["checkpoint"]).is_file()


@pytest.mark.parametrize(
    ("error", "code", "traceback"),
    [
        (ValueError("bad value"), 2, False),
        (FileNotFoundError("no such data"), 2, False),
        (RuntimeError("a bug"), 1, True),
    ],
)
@pytest.mark.parametrize("debug", [False, True])
def test_exit_codes_and_one_line_user_errors(
    error: Exception,
    code: int,
    traceback: bool,
    debug: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fastssl.train import engine

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(engine, "pretrain", fail)
    monkeypatch.delenv("FASTSSL_DEBUG", raising=False)
    argv = ["pretrain", str(_recipe(tmp_path)), "--data", str(tmp_path)]
    assert main([*(["--debug"] if debug else []), *argv]) == code
    err = capsys.readouterr().err
    assert str(error) in err
    assert ("Traceback" in err) == (traceback or debug)
    if not traceback and not debug:
        assert len(err.strip().splitlines()) == 1


def test_slurm_requeues_into_the_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_fabric.plugins.environments import SLURMEnvironment

    from fastssl.train.config import apply_overrides
    from fastssl.train.engine import build_trainer

    for key, value in {
        "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "fastssl", "SLURM_NODELIST": "node1",
        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_ID": "7",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    config = apply_overrides(
        PretrainConfig(), ["trainer.accelerator=cpu", f"trainer.out={tmp_path}"]
    )
    trainer, _ = build_trainer(config, tmp_path)
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue
    # Lightning writes hpc_ckpt_N.ckpt there on SIGUSR1; --resume auto continues it.
    assert Path(trainer.default_root_dir) == tmp_path


@pytest.mark.parametrize(
    "backend",
    ["torch", pytest.param("dali", marks=pytest.mark.skipif(not HAS_DALI, reason="no DALI"))],
)
def test_unreadable_images_are_counted_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """A folder with a truncated JPEG, a truncated PNG and an empty file trains under every
    backend that reads folders (FFCV reads a .beton, whose conversion skips such files:
    tests/data/test_shards.py)."""
    images = make_folder(tmp_path / "images", n=15, size=12)  # + cut.jpg: two full batches
    pngs = sorted(images.rglob("*.png"))
    pngs[2].write_bytes(pngs[2].read_bytes()[:40])  # truncated
    pngs[5].write_bytes(b"")  # zero bytes
    jpeg = io.BytesIO()
    Image.open(pngs[7]).save(jpeg, format="JPEG")
    (images / "class0" / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    out = tmp_path / "out"
    recipe = _recipe(tmp_path, spec_views=True)
    args = ["pretrain", str(recipe), "--data", str(images), "--max-epochs", "1"]
    # Two loader workers (torch) or threads (DALI) meet the files.
    extra = ["--set", "data.num_workers=2", "--backend", backend]
    assert main([*args, "--out", str(out), *extra]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_backend"] == backend
    assert summary["unreadable_images"] == 3
    assert "3 unreadable images were replaced" in capsys.readouterr().out
