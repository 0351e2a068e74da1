"""The seed README's code (LightlySSL 1.6) runs with only ``lightly`` replaced by ``fastssl``.

Each snippet below is the README's code as users copy it, with ``lightly`` replaced by
``fastssl``; the only other edits make it small enough for a CPU test: the dataset path,
the number of epochs, batch limits, and ``accelerator="cpu"`` with 2 processes in place of
4 GPUs. Each runs as its own script, in a subprocess, exactly as a user would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIMCLR_SETUP = """
import torch
import torchvision

from lightly import loss
from lightly import transforms
from lightly.data import LightlyDataset
from lightly.models.modules import heads


# Create a PyTorch module for the SimCLR model.
class SimCLR(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.projection_head = heads.SimCLRProjectionHead(
            input_dim=512,  # Resnet18 features have 512 dimensions.
            hidden_dim=512,
            output_dim=128,
        )

    def forward(self, x):
        features = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(features)
        return z


# Use a resnet backbone from torchvision.
backbone = torchvision.models.resnet18()
# Ignore the classification head as we only want the features.
backbone.fc = torch.nn.Identity()

# Build the SimCLR model.
model = SimCLR(backbone)

# Prepare transform that creates multiple random views for every image.
transform = transforms.SimCLRTransform(input_size=32, cj_prob=0.5)


# Create a dataset from your image folder.
dataset = LightlyDataset(input_dir="./my/cute/cats/dataset/", transform=transform)

# Build a PyTorch dataloader.
dataloader = torch.utils.data.DataLoader(
    dataset,  # Pass the dataset to the dataloader.
    batch_size=128,  # A large batch size helps with the learning.
    shuffle=True,  # Shuffling is important!
)
"""

SIMCLR_LOOP = """
# Lightly exposes building blocks such as loss functions.
criterion = loss.NTXentLoss(temperature=0.5)

# Get a PyTorch optimizer.
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-6)

# Train the model.
for epoch in range(10):
    for (view0, view1), targets, filenames in dataloader:
        z0 = model(view0)
        z1 = model(view1)
        loss = criterion(z0, z1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"loss: {loss.item():.5f}")
"""

SIMSIAM = """
# Create a PyTorch module for the SimSiam model.
class SimSiam(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.projection_head = heads.SimSiamProjectionHead(
            input_dim=512,  # Resnet18 features have 512 dimensions.
            hidden_dim=512,
            output_dim=128,
        )
        self.prediction_head = heads.SimSiamPredictionHead(
            input_dim=128,
            hidden_dim=128,
            output_dim=128,
        )

    def forward(self, x):
        features = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(features)
        p = self.prediction_head(z)
        z = z.detach()
        return z, p


# Use the SimSiam model.
model = SimSiam(backbone)

# Use the SimSiam loss function.
criterion = loss.NegativeCosineSimilarity()

optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
for (x0, x1), _, _ in dataloader:
    z0, p0 = model(x0)
    z1, p1 = model(x1)
    loss = 0.5 * (criterion(z0, p1) + criterion(z1, p0))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    print(f"loss: {loss.item():.5f}")
"""

LIGHTNING = """
import pytorch_lightning as pl


class SimCLR(pl.LightningModule):
    def __init__(self):
        super().__init__()
        resnet = torchvision.models.resnet18()
        resnet.fc = torch.nn.Identity()
        self.backbone = resnet
        self.projection_head = heads.SimCLRProjectionHead(512, 512, 128)
        self.criterion = loss.NTXentLoss()

    def forward(self, x):
        features = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(features)
        return z

    def training_step(self, batch, batch_index):
        (view0, view1), _, _ = batch
        z0 = self.forward(view0)
        z1 = self.forward(view1)
        loss = self.criterion(z0, z1)
        return loss

    def configure_optimizers(self):
        optim = torch.optim.SGD(self.parameters(), lr=0.06)
        return optim


model = SimCLR()
"""

LIGHTNING_FIT = """
trainer = pl.Trainer(max_epochs=10, devices=1, accelerator="gpu")
trainer.fit(model, dataloader)
"""

DISTRIBUTED = """
# Use distributed version of loss functions.
criterion = loss.NTXentLoss(gather_distributed=True)

trainer = pl.Trainer(
    max_epochs=10,
    devices=4,
    accelerator="gpu",
    strategy="ddp",
    sync_batchnorm=True,
    use_distributed_sampler=True,  # or replace_sampler_ddp=True for PyTorch Lightning <2.0
)
trainer.fit(model, dataloader)
"""

# The edits that shrink the README's code to a CPU test; everything else is verbatim.
# torch.nn.SyncBatchNorm (what sync_batchnorm=True installs) refuses CPU tensors, so the
# CPU run uses fastssl's synchronized batch norm through its Lightning plugin; and the
# README leaves plugging its distributed criterion into the module to the reader.
SHRINK = {
    "./my/cute/cats/dataset/": "{data}",
    "sync_batchnorm=True,": "plugins=[SyncBatchNormPlugin()], callbacks=[Probe()],",
    "criterion = loss.NTXentLoss(gather_distributed=True)\n": (
        "criterion = loss.NTXentLoss(gather_distributed=True)\nmodel.criterion = criterion\n"
        "from fastssl.models.batchnorm import SyncBatchNormPlugin\n"
        "class Probe(pl.Callback):  # test instrumentation: what ran inside the step\n"
        "    def on_train_batch_end(self, trainer, pl_module, *args):\n"
        "        bn = type(pl_module.backbone.bn1).__name__\n"
        "        print(f'world_size={trainer.world_size} batchnorm={bn}')\n"
    ),
    "batch_size=128,": "batch_size=8,",
    "range(10)": "range(1)",
    "max_epochs=10,": (
        "max_epochs=1, limit_train_batches=2, logger=False, enable_checkpointing=False,"
    ),
    'devices=1, accelerator="gpu"': 'devices=1, accelerator="cpu"',
    'devices=4,\n    accelerator="gpu",': 'devices=2,\n    accelerator="cpu",',
}


def migrate(code: str, data: Path) -> str:
    """Replaces ``lightly`` with ``fastssl`` and applies the shrinking edits."""
    code = code.replace("from lightly", "from fastssl").replace("import lightly", "import fastssl")
    assert "lightly" not in code.replace("lightly exposes", "").replace("Lightly exposes", "")
    for old, new in SHRINK.items():
        code = code.replace(old, new.replace("{data}", str(data)))
    return code


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cats")
    rng = np.random.default_rng(0)
    for i in range(16):
        pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"cat_{i:02d}.jpg")
    return root


def run_script(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "readme_example.py"
    # Lightning's "ddp" strategy re-executes the script for the other ranks, so the
    # code needs the standard entry-point guard, as any user script launched with ddp.
    body = textwrap.indent(code, "    ")
    script.write_text(f"def main():\n{body}\n\nif __name__ == '__main__':\n    main()\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
        timeout=600, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([SIMCLR_SETUP, SIMCLR_LOOP], id="simclr-pytorch-loop"),
        pytest.param([SIMCLR_SETUP, SIMSIAM], id="simsiam"),
        pytest.param([SIMCLR_SETUP, LIGHTNING, LIGHTNING_FIT], id="simclr-lightning"),
        pytest.param(
            [SIMCLR_SETUP, LIGHTNING, DISTRIBUTED],
            id="simclr-lightning-ddp-2-processes",
            marks=pytest.mark.dist,
        ),
    ],
)
def test_readme_code_runs_with_fastssl(
    parts: list[str], image_folder: Path, tmp_path: Path
) -> None:
    code = migrate("\n".join(parts), image_folder)
    result = run_script(code, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    if "strategy=" in code:
        assert "world_size=2 batchnorm=SyncBatchNorm" in result.stdout, result.stdout[-2000:]
    if "for epoch in range" in code or "SimSiam" in code:
        losses = [
            float(line.split()[1])
            for line in result.stdout.splitlines()
            if line.startswith("loss:")
        ]
        assert len(losses) == 2  # 16 images, batch 8: two steps
        assert all(np.isfinite(losses))
