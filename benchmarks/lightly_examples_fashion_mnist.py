"""LightlySSL 1.6.0's own example code against ``fastssl pretrain``'s small-image recipes:
SimCLR, BYOL and DINO (the issue's three; SimSiam, MoCo, SwaV, TiCo, SMoG, CAPI, MSN,
PMSN and DINOv2 on request) on Fashion-MNIST, same data, backbone family and epochs, in one run.

* ``lightly example``: the training loop of LightlySSL's ``examples/pytorch/<method>.py``
  as lightly 1.6.0 ships it (its heads, loss, optimizer, momentum schedule and batch
  size), with three changes only: the images come from the prepared folder
  (``LightlyDataset(input_dir=...)``), the views are made at 32 px (DINO's and SwaV's
  local crops at 16 px, as the fastssl recipes), and the epochs are ``--epochs``
  (``--precision bf16-mixed`` runs the whole program under CPU bf16 autocast, as fastssl's
  recipes train, for the examples too slow in float32 on a CPU); SMoG's
  example does not run as lightly 1.6.0 ships it, so its row runs the SMoG model of
  LightlySSL's ImageNette benchmark script (see its entry in :data:`EXAMPLES`).
  Backbone: torchvision's ResNet-18 without its classifier (``children()[:-1]``), as in
  the examples, which the script saves at the end; CAPI's, MSN's, PMSN's and DINOv2's: the
  ViT of fastssl's recipe (:data:`VIT_EXAMPLES`; DINOv2's with its example's LayerScale),
  whose EMA teacher / target network it saves.
* ``fastssl pretrain``: ``pipelines/fashion_mnist/<method>.yaml`` (``timm:resnet18``: the
  same architecture, standard stem) for the same epochs.
* ``random init``: torchvision's ResNet-18, seeded, untrained (for the ViT examples: the
  recipe's ViT as benchmarks/methods_fashion_mnist.py initialises its random baseline).

Every ResNet is then scored by one function (fastssl's evaluation transform, feature
extraction and weighted kNN, k=200, t=0.1, the bank being the training images); the ViT
examples' rows (CAPI's judged by the linear probe, MSN's, PMSN's and DINOv2's by kNN) as
benchmarks/methods_fashion_mnist.py scores its rows (``fastssl eval knn linear
--no-augment``). The wall time of each training process is reported beside it
(interpreter start-up included). ``--examples-only`` leaves the fastssl recipes out (their
rows come from benchmarks/methods_fashion_mnist.py, which trains them on the same data with
the same seed), for the examples that take longest on a CPU.

Prints a Markdown table and writes the JSON to ``--out`` (default
benchmarks/results/lightly_examples_fashion_mnist.json) and the table beside it (``.md``).

Usage: python benchmarks/lightly_examples_fashion_mnist.py
    [--methods simclr,byol,dino[,simsiam,moco,swav,tico,smog,capi,msn,pmsn,dinov2]]
    [--epochs 10] [--train 10000] [--test 2000] [--data DIR] [--workers 2] [--seed 0]
    [--examples-only] [--precision {32-true,bf16-mixed}] [--out F]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fashion_mnist_accuracy import knn_top1  # noqa: E402
from methods_fashion_mnist import (  # noqa: E402
    backbone_checkpoint,
    baseline_wrapper,
    load_recipe,
    random_init_checkpoint,
    recipe_command,
    run,
    score_checkpoint,
)
from pretrain_epoch import write_report  # noqa: E402

from fastssl.eval.checkpoint import select_backbone  # noqa: E402
from fastssl.train.checkpoint import load_method  # noqa: E402

# What every example shares: arguments, seed, the torchvision backbone, and its
# DataLoader over the folder (LightlyDataset, shuffled, drop_last, at the example's batch).
EXAMPLE_HEAD = """
import copy, sys
import torch, torchvision
from torch import nn
from lightly.data import LightlyDataset
from lightly.loss import DINOLoss, NegativeCosineSimilarity, NTXentLoss, SwaVLoss, TiCoLoss
from lightly.models.modules import (
    BYOLPredictionHead, BYOLProjectionHead, DINOProjectionHead, MoCoProjectionHead,
    SimCLRProjectionHead, SimSiamPredictionHead, SimSiamProjectionHead, SwaVProjectionHead,
    SwaVPrototypes,
)
from lightly.models.modules.heads import TiCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import (
    BYOLTransform, BYOLView1Transform, BYOLView2Transform, DINOTransform, MoCoV2Transform,
    SimCLRTransform, SimSiamTransform, SwaVTransform, TiCoTransform, TiCoView1Transform,
)
from lightly.utils.scheduler import cosine_schedule

folder, save_to, precision = sys.argv[1], sys.argv[5], sys.argv[6]
workers, epochs, seed = (int(arg) for arg in sys.argv[2:5])
if precision == "bf16-mixed":
    # The whole program under CPU autocast, as Lightning's bf16-mixed trains fastssl's
    # recipes (parameters, optimizer and EMA stay float32; matrix products run in bf16).
    torch.autocast("cpu", dtype=torch.bfloat16).__enter__()
torch.manual_seed(seed)
resnet = torchvision.models.resnet18()
backbone = nn.Sequential(*list(resnet.children())[:-1])

def make_loader(transform, batch_size):
    dataset = LightlyDataset(input_dir=folder, transform=transform)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers
    )
"""

# The loops of lightly's examples/pytorch/{simclr,byol,dino,simsiam,moco,swav,tico,capi}.py and
# LightlySSL's ImageNette benchmark's SMoG model (lightly 1.6.0); msn.py, pmsn.py and
# dinov2.py below.
EXAMPLES: dict[str, str] = {
    "simclr": """
class SimCLR(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(512, 512, 128)

    def forward(self, x):
        x = self.backbone(x).flatten(start_dim=1)
        return self.projection_head(x)

model = SimCLR(backbone)
transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)
dataloader = make_loader(transform, batch_size=256)
criterion = NTXentLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
for epoch in range(epochs):
    for batch in dataloader:
        x0, x1 = batch[0]
        z0, z1 = model(x0), model(x1)
        loss = criterion(z0, z1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
torch.save(model.backbone.state_dict(), save_to)
""",
    "byol": """
class BYOL(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(512, 1024, 256)
        self.prediction_head = BYOLPredictionHead(256, 1024, 256)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x):
        y = self.backbone(x).flatten(start_dim=1)
        return self.prediction_head(self.projection_head(y))

    def forward_momentum(self, x):
        y = self.backbone_momentum(x).flatten(start_dim=1)
        return self.projection_head_momentum(y).detach()

model = BYOL(backbone)
transform = BYOLTransform(
    view_1_transform=BYOLView1Transform(input_size=32, gaussian_blur=0.0),
    view_2_transform=BYOLView2Transform(input_size=32, gaussian_blur=0.0),
)
dataloader = make_loader(transform, batch_size=256)
criterion = NegativeCosineSimilarity()
optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
for epoch in range(epochs):
    momentum_val = cosine_schedule(epoch, epochs, 0.996, 1)
    for batch in dataloader:
        x0, x1 = batch[0]
        update_momentum(model.backbone, model.backbone_momentum, m=momentum_val)
        update_momentum(model.projection_head, model.projection_head_momentum, m=momentum_val)
        p0, z0 = model(x0), model.forward_momentum(x0)
        p1, z1 = model(x1), model.forward_momentum(x1)
        loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
torch.save(model.backbone.state_dict(), save_to)
""",
    "dino": """
class DINO(nn.Module):
    def __init__(self, backbone, input_dim):
        super().__init__()
        self.student_backbone = backbone
        self.student_head = DINOProjectionHead(input_dim, 512, 64, 2048, freeze_last_layer=1)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = DINOProjectionHead(input_dim, 512, 64, 2048)
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)

    def forward(self, x):
        y = self.student_backbone(x).flatten(start_dim=1)
        return self.student_head(y)

    def forward_teacher(self, x):
        y = self.teacher_backbone(x).flatten(start_dim=1)
        return self.teacher_head(y)

model = DINO(backbone, 512)
transform = DINOTransform(global_crop_size=32, local_crop_size=16)
dataloader = make_loader(transform, batch_size=64)
criterion = DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=5)
optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
for epoch in range(epochs):
    momentum_val = cosine_schedule(epoch, epochs, 0.996, 1)
    for batch in dataloader:
        views = batch[0]
        update_momentum(model.student_backbone, model.teacher_backbone, m=momentum_val)
        update_momentum(model.student_head, model.teacher_head, m=momentum_val)
        global_views = views[:2]
        teacher_out = [model.forward_teacher(view) for view in global_views]
        student_out = [model.forward(view) for view in views]
        loss = criterion(teacher_out, student_out, epoch=epoch)
        loss.backward()
        model.student_head.cancel_last_layer_gradients(current_epoch=epoch)
        optimizer.step()
        optimizer.zero_grad()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
torch.save(model.student_backbone.state_dict(), save_to)
""",
    "simsiam": """
class SimSiam(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(512, 512, 128)
        self.prediction_head = SimSiamPredictionHead(128, 64, 128)

    def forward(self, x):
        f = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(f)
        p = self.prediction_head(z)
        return z.detach(), p

model = SimSiam(backbone)
transform = SimSiamTransform(input_size=32)
dataloader = make_loader(transform, batch_size=256)
criterion = NegativeCosineSimilarity()
optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
for epoch in range(epochs):
    for batch in dataloader:
        x0, x1 = batch[0]
        z0, p0 = model(x0)
        z1, p1 = model(x1)
        loss = 0.5 * (criterion(z0, p1) + criterion(z1, p0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
torch.save(model.backbone.state_dict(), save_to)
""",
    "moco": """
class MoCo(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(512, 512, 128)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x):
        query = self.backbone(x).flatten(start_dim=1)
        return self.projection_head(query)

    def forward_momentum(self, x):
        key = self.backbone_momentum(x).flatten(start_dim=1)
        return self.projection_head_momentum(key).detach()

model = MoCo(backbone)
transform = MoCoV2Transform(input_size=32)
dataloader = make_loader(transform, batch_size=256)
criterion = NTXentLoss(memory_bank_size=(4096, 128))
optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
for epoch in range(epochs):
    momentum_val = cosine_schedule(epoch, epochs, 0.996, 1)
    for batch in dataloader:
        x_query, x_key = batch[0]
        update_momentum(model.backbone, model.backbone_momentum, m=momentum_val)
        update_momentum(model.projection_head, model.projection_head_momentum, m=momentum_val)
        query = model(x_query)
        key = model.forward_momentum(x_key)
        loss = criterion(query, key)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
torch.save(model.backbone.state_dict(), save_to)
""",
    "swav": """
class SwaV(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SwaVProjectionHead(512, 512, 128)
        self.prototypes = SwaVPrototypes(128, n_prototypes=512)

    def forward(self, x):
        x = self.backbone(x).flatten(start_dim=1)
        x = self.projection_head(x)
        x = nn.functional.normalize(x, dim=1, p=2)
        return self.prototypes(x)

model = SwaV(backbone)
transform = SwaVTransform(crop_sizes=(32, 16))
dataloader = make_loader(transform, batch_size=128)
criterion = SwaVLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
for epoch in range(epochs):
    for batch in dataloader:
        model.prototypes.normalize()
        multi_crop_features = [model(x) for x in batch[0]]
        loss = criterion(multi_crop_features[:2], multi_crop_features[2:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
torch.save(model.backbone.state_dict(), save_to)
""",
    "tico": """
class TiCo(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.projection_head = TiCoProjectionHead(512, 1024, 256)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x):
        y = self.backbone(x).flatten(start_dim=1)
        return self.projection_head(y)

    def forward_momentum(self, x):
        y = self.backbone_momentum(x).flatten(start_dim=1)
        return self.projection_head_momentum(y).detach()

model = TiCo(backbone)
transform = TiCoTransform(
    view_1_transform=TiCoView1Transform(input_size=32, gaussian_blur=0.0),
    view_2_transform=TiCoView1Transform(input_size=32, gaussian_blur=0.0),
)
dataloader = make_loader(transform, batch_size=256)
criterion = TiCoLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
for epoch in range(epochs):
    momentum_val = cosine_schedule(epoch, epochs, 0.996, 1)
    for batch in dataloader:
        x0, x1 = batch[0]
        update_momentum(model.backbone, model.backbone_momentum, m=momentum_val)
        update_momentum(model.projection_head, model.projection_head_momentum, m=momentum_val)
        z0 = model(x0)
        z1 = model.forward_momentum(x1)
        loss = criterion(z0, z1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
torch.save(model.backbone.state_dict(), save_to)
""",
    # SMoG: examples/pytorch/smog.py does not run as lightly 1.6.0 ships it (it calls
    # SMoGModel without n_groups, uses batch_idx and self outside their scope and
    # SMoGPrototypes.update_groups, which does not exist, and overwrites the loss with
    # SimSiam's); this is the SMoG model of LightlySSL's ImageNette benchmark
    # (docs/source/getting_started/benchmarks/imagenette_benchmark.py), which runs, as a
    # loop: its heads, 300 groups, bank of 10,000, resets every 300 steps, SGD 0.01 with
    # a cosine per epoch, and its two 0.2-1 crops without blur at 32 px (its CIFAR-10
    # setting). One change for lightly 1.6: its memory bank is stored (size, dim), so
    # the k-means reads ``bank`` where the benchmark, written for (dim, size), read
    # ``bank.t()``.
    "smog": """
from sklearn.cluster import KMeans
from lightly.models.modules import SMoGPredictionHead, SMoGProjectionHead, SMoGPrototypes
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.transforms import SMoGTransform

class SMoG(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SMoGProjectionHead(512, 2048, 128)
        self.prediction_head = SMoGPredictionHead(128, 2048, 128)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.n_groups = 300
        self.memory_bank = MemoryBankModule(size=(10000, 128))
        group_features = nn.functional.normalize(torch.rand(self.n_groups, 128), dim=1)
        self.smog = SMoGPrototypes(group_features=group_features, beta=0.99)

    def reset_group_features(self):
        features = self.memory_bank.bank.cpu().numpy()
        kmeans = KMeans(self.n_groups).fit(features)
        clustered = torch.from_numpy(kmeans.cluster_centers_).float()
        self.smog.set_group_features(nn.functional.normalize(clustered, dim=1))

    def reset_momentum_weights(self):
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

model = SMoG(backbone)
transform = SMoGTransform(
    crop_sizes=(32, 32), crop_counts=(1, 1), crop_min_scales=(0.2, 0.2),
    crop_max_scales=(1.0, 1.0), gaussian_blur_probs=(0.0, 0.0),
)
dataloader = make_loader(transform, batch_size=256)
criterion = nn.CrossEntropyLoss()
params = (
    list(model.backbone.parameters()) + list(model.projection_head.parameters())
    + list(model.prediction_head.parameters())
)
optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-6)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
global_step = 0
for epoch in range(epochs):
    for batch_idx, batch in enumerate(dataloader):
        if global_step > 0 and global_step % 300 == 0:
            model.reset_group_features()
            model.reset_momentum_weights()
        else:
            update_momentum(model.backbone, model.backbone_momentum, 0.99)
            update_momentum(model.projection_head, model.projection_head_momentum, 0.99)
        x0, x1 = batch[0]
        if batch_idx % 2:
            x0, x1 = x1, x0
        x0_encoded = model.projection_head(model.backbone(x0).flatten(start_dim=1))
        x0_predicted = model.prediction_head(x0_encoded)
        x1_features = model.backbone_momentum(x1).flatten(start_dim=1)
        x1_encoded = model.projection_head_momentum(x1_features)
        assignments = model.smog.assign_groups(x1_encoded)
        group_features = model.smog.get_updated_group_features(x0_encoded)
        logits = model.smog(x0_predicted, group_features, temperature=0.1)
        model.smog.set_group_features(group_features)
        loss = criterion(logits, assignments)
        model.memory_bank(x0_encoded, update=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        global_step += 1
    scheduler.step()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
torch.save(model.backbone.state_dict(), save_to)
""",
    # CAPI's example (examples/pytorch/capi.py) with the ViT of fastssl's recipe at 32 px
    # (vit_backbone("capi"), created with the options fastssl creates it with) in place of
    # its ViT-S/16 at 256 px with 7 registers; it saves the EMA teacher, the network CAPI
    # evaluates.
    "capi": """
import timm
from lightly.loss import CAPILoss
from lightly.models import utils
from lightly.models.modules import (
    CAPIPredictorTIMM, CAPIProjectionHead, MaskedVisionTransformerTIMM,
)
from lightly.transforms import CAPITransform

class CAPI(nn.Module):
    def __init__(self, vit, num_clusters=1024):
        super().__init__()
        self.mask_ratio = 0.65
        self.student_backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.sequence_length = self.student_backbone.sequence_length
        self.num_prefix_tokens = vit.num_prefix_tokens
        embed_dim = vit.embed_dim
        grid_size = vit.patch_embed.grid_size[0]
        self.student_head = CAPIProjectionHead(
            input_dim=embed_dim, num_clusters=num_clusters, weight_norm=True
        )
        self.predictor = CAPIPredictorTIMM(
            embed_dim=embed_dim, grid_size=grid_size, depth=2, num_heads=6
        )
        self.teacher_backbone = copy.deepcopy(self.student_backbone)
        self.teacher_head = CAPIProjectionHead(
            input_dim=embed_dim, num_clusters=num_clusters, bias=True
        )
        deactivate_requires_grad(self.teacher_backbone)

    def forward_student(self, images, idx_keep, idx_mask):
        visible_tokens = self.student_backbone.encode(images=images, idx_keep=idx_keep)
        num_prefix_tokens = self.num_prefix_tokens
        predicted_tokens = self.predictor(
            context=visible_tokens[:, num_prefix_tokens:],
            context_positions=idx_keep[:, num_prefix_tokens:] - num_prefix_tokens,
            query_positions=idx_mask - num_prefix_tokens,
        )
        return self.student_head(predicted_tokens)

    def forward_teacher(self, images):
        with torch.no_grad():
            features = self.teacher_backbone.encode(images=images)
        logits = self.teacher_head(features)
        return logits[:, self.num_prefix_tokens :]

torch.manual_seed(seed)
vit = timm.create_model(
    "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32,
    dynamic_img_size=True, patch_size=4, depth=6, global_pool="avg", fc_norm=False,
)
model = CAPI(vit)
transform = CAPITransform(input_size=32)
dataloader = make_loader(transform, batch_size=32)
criterion = CAPILoss()
optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-4)
for epoch in range(epochs):
    momentum = cosine_schedule(step=epoch, max_steps=epochs, start_value=0.996, end_value=1.0)
    for batch in dataloader:
        images = batch[0][0]
        idx_keep, idx_mask = utils.random_inverse_block_mask(
            size=(images.shape[0], model.sequence_length),
            mask_ratio=model.mask_ratio,
            num_prefix_tokens=model.num_prefix_tokens,
            device=images.device,
        )
        student_logits = model.forward_student(images=images, idx_keep=idx_keep, idx_mask=idx_mask)
        teacher_logits = model.forward_teacher(images=images)
        student_loss = criterion(
            teacher_logits=teacher_logits,
            student_logits=student_logits,
            teacher_index=idx_mask - model.num_prefix_tokens,
        )
        clustering_loss = criterion(teacher_logits=teacher_logits, student_logits=teacher_logits)
        loss = student_loss + clustering_loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        update_momentum(model.student_backbone, model.teacher_backbone, m=momentum)
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
torch.save(model.teacher_backbone.vit.state_dict(), save_to)
""",
}

# MSN's and PMSN's examples (examples/pytorch/msn.py, pmsn.py) differ in their loss only.
# Both with the ViT of fastssl's recipe at 32 px (timm, in LightlySSL's timm masked wrapper)
# in place of their torchvision ViT-S/16 at 224 px (its projection head's input width
# follows: 192), focal crops at 16 px; otherwise as shipped (1024 prototypes that the loss
# gets as ``.data``, 15 % masked, momentum 0.996, AdamW 1.5e-4, batch 64, 2 + 10 views).
# They save the target network, the one MSN evaluates.
MSN_EXAMPLE = """
import timm
from lightly.loss import {loss}
from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerTIMM
from lightly.models.modules.heads import MSNProjectionHead
from lightly.transforms import MSNTransform

class MSN(nn.Module):
    def __init__(self, vit):
        super().__init__()
        self.mask_ratio = 0.15
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.projection_head = MSNProjectionHead(input_dim=vit.embed_dim)
        self.anchor_backbone = copy.deepcopy(self.backbone)
        self.anchor_projection_head = copy.deepcopy(self.projection_head)
        utils.deactivate_requires_grad(self.backbone)
        utils.deactivate_requires_grad(self.projection_head)
        self.prototypes = nn.Linear(256, 1024, bias=False).weight

    def forward_masked(self, images):
        batch_size, _, _, width = images.shape
        seq_length = (width // self.anchor_backbone.vit.patch_embed.patch_size[0]) ** 2
        idx_keep, _ = utils.random_token_mask(
            size=(batch_size, seq_length), mask_ratio=self.mask_ratio, device=images.device
        )
        out = self.anchor_backbone(images=images, idx_keep=idx_keep)
        return self.anchor_projection_head(out)

torch.manual_seed(seed)
vit = timm.create_model(
    "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32,
    dynamic_img_size=True, patch_size=4, depth=6,
)
model = MSN(vit)
transform = MSNTransform(random_size=32, focal_size=16)
dataloader = make_loader(transform, batch_size=64)
criterion = {loss}()
params = [
    *list(model.anchor_backbone.parameters()),
    *list(model.anchor_projection_head.parameters()),
    model.prototypes,
]
optimizer = torch.optim.AdamW(params, lr=1.5e-4)
for epoch in range(epochs):
    for batch in dataloader:
        views = batch[0]
        utils.update_momentum(model.anchor_backbone, model.backbone, 0.996)
        utils.update_momentum(model.anchor_projection_head, model.projection_head, 0.996)
        targets, anchors = views[0], views[1]
        anchors_focal = torch.concat(views[2:], dim=0)
        targets_out = model.projection_head(model.backbone(images=targets))
        anchors_out = model.forward_masked(anchors)
        anchors_focal_out = model.forward_masked(anchors_focal)
        anchors_out = torch.cat([anchors_out, anchors_focal_out], dim=0)
        loss = criterion(anchors_out, targets_out, model.prototypes.data)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"epoch {{epoch}} loss {{loss.item():.4f}}", flush=True)
torch.save(model.backbone.vit.state_dict(), save_to)
"""
EXAMPLES["msn"] = MSN_EXAMPLE.format(loss="MSNLoss")
EXAMPLES["pmsn"] = MSN_EXAMPLE.format(loss="PMSNLoss")

# DINOv2's example (examples/pytorch/dinov2.py) with the ViT of fastssl's recipe at 32 px
# (6 ViT-Tiny blocks with 4-px patches, its heads' input width following: 192) in place of
# its ViT-S/16, keeping the example's LayerScale (``init_values=1e-5``, see
# :data:`EXAMPLE_BACKBONES`), learnt position embedding and drop path 0.1; its multi-crop
# at 32 / 16 px, otherwise as shipped: the default DINOv2 head (2048-256-65536, shared by
# the DINO and iBOT losses), block masks on both global crops, KoLeo 0.1, AdamW 1e-3 at
# batch 64 with weight decay 0.04 -> 0.4, teacher momentum 0.992 -> 1, and the teacher
# temperature warmed up from 0.04 towards 0.07 over ``30 / epochs`` times the run's steps
# (tuned for its 50 epochs: over 10 it stays below 0.05). It saves the teacher.
EXAMPLES["dinov2"] = """
import timm
from lightly.loss import IBOTPatchLoss, KoLeoLoss
from lightly.models.modules import DINOv2ProjectionHead, MaskedVisionTransformerTIMM
from lightly.models.utils import random_block_mask, update_drop_path_rate
from lightly.utils.scheduler import linear_warmup_schedule

class DINOv2Head(nn.Module):
    def __init__(self, dino_head, ibot_head):
        super().__init__()
        self.dino_head = dino_head
        self.ibot_head = ibot_head

class DINOv2(nn.Module):
    def __init__(self, vit):
        super().__init__()
        self.teacher_backbone = MaskedVisionTransformerTIMM(
            vit=vit, antialias=False, pos_embed_initialization="skip"
        )
        self.student_backbone = copy.deepcopy(self.teacher_backbone)
        update_drop_path_rate(self.student_backbone.vit, drop_path_rate=0.1, mode="uniform")
        deactivate_requires_grad(self.teacher_backbone)
        self.teacher_backbone.eval()
        teacher_head = DINOv2ProjectionHead(input_dim=vit.embed_dim)
        student_head = DINOv2ProjectionHead(input_dim=vit.embed_dim)
        self.teacher_head = DINOv2Head(dino_head=teacher_head, ibot_head=teacher_head)
        self.student_head = DINOv2Head(dino_head=student_head, ibot_head=student_head)
        deactivate_requires_grad(self.teacher_head)
        self.teacher_head.eval()

    def forward_teacher(self, x):
        features = self.teacher_backbone.encode(x)
        return features[:, 0], features

    def forward_student(self, x, mask):
        features = self.student_backbone.encode(x, mask=mask)
        return features[:, 0], None if mask is None else features[mask]

torch.manual_seed(seed)
vit = timm.create_model(
    "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32,
    dynamic_img_size=True, patch_size=4, depth=6, init_values=1e-5,
)
model = DINOv2(vit)
transform = DINOTransform(
    global_crop_size=32, global_crop_scale=(0.32, 1), local_crop_size=16,
    local_crop_scale=(0.05, 0.32), n_local_views=8,
)
dataloader = make_loader(transform, batch_size=64)
dino_criterion, ibot_criterion, koleo_criterion = DINOLoss(), IBOTPatchLoss(), KoLeoLoss()
optimizer = torch.optim.AdamW(model.parameters(), lr=0.001)
num_batches = len(dataloader)
total_steps = epochs * num_batches
for epoch in range(epochs):
    for batch_idx, batch in enumerate(dataloader):
        views = batch[0]
        global_views = torch.cat(views[:2])
        local_views = torch.cat(views[2:])
        B = len(global_views)
        sequence_length = model.teacher_backbone.sequence_length
        mask = global_views.new_zeros((B, sequence_length), dtype=torch.bool)
        H, W = model.teacher_backbone.vit.patch_embed.grid_size
        block_mask = random_block_mask(size=(B, H, W), device=mask.device)
        mask[:, 1:] = block_mask.flatten(start_dim=1)
        with torch.no_grad():
            teacher_cls_token, teacher_features = model.forward_teacher(global_views)
            teacher_cls_out = model.teacher_head.dino_head(teacher_cls_token)
            teacher_masked_out = model.teacher_head.ibot_head(teacher_features[mask])
        student_global_cls_token, student_global_masked_features = model.forward_student(
            global_views, mask=mask
        )
        student_global_cls_out = model.student_head.dino_head(student_global_cls_token)
        student_global_masked_out = model.student_head.ibot_head(student_global_masked_features)
        student_local_cls_token, _ = model.forward_student(local_views, mask=None)
        student_local_cls_out = model.student_head.dino_head(student_local_cls_token)
        student_cls_out = torch.cat([student_global_cls_out, student_local_cls_out])
        global_step = epoch * num_batches + batch_idx
        teacher_temp = linear_warmup_schedule(
            step=global_step, warmup_steps=int(30 / epochs * total_steps),
            start_value=0.04, end_value=0.07,
        )
        dino_loss = dino_criterion(
            teacher_out=teacher_cls_out.chunk(2),
            student_out=student_cls_out.chunk(len(views)),
            teacher_temp=teacher_temp,
        )
        ibot_loss = ibot_criterion(
            teacher_out=teacher_masked_out, student_out=student_global_masked_out,
            mask=block_mask, teacher_temp=teacher_temp,
        )
        koleo_loss = 0.1 * sum(koleo_criterion(t) for t in student_global_cls_token.chunk(2))
        loss = dino_loss + ibot_loss + koleo_loss
        loss.backward()
        weight_decay = cosine_schedule(
            step=global_step, max_steps=total_steps, start_value=0.04, end_value=0.4
        )
        for group in optimizer.param_groups:
            if group["weight_decay"] != 0.0:
                group["weight_decay"] = weight_decay
        optimizer.step()
        optimizer.zero_grad()
        momentum = cosine_schedule(
            step=global_step, max_steps=total_steps, start_value=0.992, end_value=1.0
        )
        update_momentum(model.student_backbone, model.teacher_backbone, m=momentum)
        update_momentum(model.student_head, model.teacher_head, m=momentum)
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
torch.save(model.teacher_backbone.vit.state_dict(), save_to)
"""


#: The arithmetic an example can run in (``--precision``): LightlySSL's float32, or bf16
#: autocast over the whole program as fastssl's ``bf16-mixed`` recipes train.
PRECISIONS = ("32-true", "bf16-mixed")

#: The examples whose backbone is the ViT of fastssl's recipe (:func:`vit_backbone`) and
#: whose rows are scored as the method benchmark scores them: ``fastssl eval knn linear
#: --no-augment`` (the linear probe judges CAPI, a masked-image method; kNN judges MSN,
#: PMSN and DINOv2).
VIT_EXAMPLES = frozenset({"capi", "msn", "pmsn", "dinov2"})

#: The ViT an example trains where it differs from its recipe's: DINOv2's example keeps its
#: LayerScale (``init_values``), which fastssl's recipe leaves out.
EXAMPLE_BACKBONES = {
    "dinov2": "timm:vit_tiny_patch16_224(patch_size=4, depth=6, init_values=1.0e-05)",
}


def vit_backbone(method: str) -> str:
    """The backbone of ``method``'s small-image recipe (a ``timm:`` ViT name)."""
    backbone: str = load_recipe(method)["method_kwargs"]["backbone"]
    return backbone


def example_backbone(method: str) -> str:
    """The backbone ``method``'s example trains and saves (a ``timm:`` ViT name): its
    recipe's (:func:`vit_backbone`) unless :data:`EXAMPLE_BACKBONES` names another."""
    return EXAMPLE_BACKBONES.get(method) or vit_backbone(method)


def torchvision_resnet18(weights: Path | None = None, seed: int = 0) -> nn.Module:
    """torchvision's ResNet-18 as the examples build it (``children()[:-1]``), seeded,
    with the saved ``weights`` if given."""
    torch.manual_seed(seed)
    resnet = torchvision.models.resnet18()
    network = nn.Sequential(*list(resnet.children())[:-1], nn.Flatten(1))
    if weights is not None:
        network.load_state_dict(torch.load(weights, weights_only=True), strict=True)
    return network


def lightly_example(
    method: str, data: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Runs lightly's example for ``method``; its row."""
    weights = work / f"lightly-{method}.pt"
    program = textwrap.dedent(EXAMPLE_HEAD) + textwrap.dedent(EXAMPLES[method])
    command = [
        sys.executable, "-c", program, str(data / "train"), str(args.workers),
        str(args.epochs), str(args.seed), str(weights), args.precision,
    ]  # fmt: skip
    wall = run(command, work / f"lightly-{method}.log")
    if method in VIT_EXAMPLES:
        checkpoint, out = work / f"lightly-{method}.ckpt", work / f"lightly-{method}"
        backbone_checkpoint(example_backbone(method), weights, args.seed, checkpoint)
        return score_checkpoint({"wall_s": wall}, checkpoint, data, out, args)
    network = torchvision_resnet18(weights)
    return {"knn_top1": knn_top1(network, data), "wall_s": wall}


def fastssl_recipe(method: str, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Runs ``fastssl pretrain`` with the method's small-image recipe; its row."""
    out = work / f"fastssl-{method}"
    out.mkdir(parents=True, exist_ok=True)
    wall = run(recipe_command(method, data, out, args), out / "pretrain.log")
    if method in VIT_EXAMPLES:
        return score_checkpoint({"wall_s": wall}, out / "last.ckpt", data, out, args)
    network, _ = select_backbone(load_method(out / "last.ckpt"))
    return {"knn_top1": knn_top1(network, data), "wall_s": wall}


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    """The rows as a Markdown table (with fastssl's speed-up over the example; the linear
    probe's accuracy for the rows that have one)."""
    lines = ["| run | kNN top-1 | linear top-1 | wall s | speed-up |", "|---|---|---|---|---|"]
    for name, row in rows.items():
        wall, linear = row.get("wall_s"), row.get("linear_top1")
        lines.append(
            f"| {name} | {row['knn_top1']:.4f} | {'' if linear is None else f'{linear:.4f}'} "
            f"| {'' if wall is None else f'{wall:.0f}'} | {row.get('speedup', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--methods", default="simclr,byol,dino", help=f"comma-separated, of {', '.join(EXAMPLES)}"
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every run (10)")
    parser.add_argument("--train", type=int, default=10_000, help="training images (10,000)")
    parser.add_argument("--test", type=int, default=2_000, help="test images (2,000)")
    parser.add_argument("--data", default=None, help="a prepared folder with train/ and test/")
    parser.add_argument("--workers", type=int, default=2, help="loader workers (2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (0)")
    parser.add_argument(
        "--examples-only",
        action="store_true",
        help="run LightlySSL's examples and the random baselines, not the fastssl recipes "
        "(whose rows benchmarks/methods_fashion_mnist.py measures on the same data and seed)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32-true",
        help="arithmetic of the examples: 32-true (float32, as LightlySSL ships them; the "
        "default) or bf16-mixed (the whole program under CPU bf16 autocast, as fastssl's "
        "recipes train; about 1.7x faster for DINOv2's example on a 2-core AMD EPYC)",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/lightly_examples_fashion_mnist.json")
    )
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(EXAMPLES))
    if unknown:
        parser.error(f"--methods: no lightly example for {unknown}; choose from {sorted(EXAMPLES)}")
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fastssl-lightly-examples-") as tmp:
        work = Path(tmp)
        data = Path(args.data) if args.data else work / "fashion-mnist"
        if args.data is None:
            command = [
                sys.executable, str(ROOT / "tools" / "prepare_fashion_mnist.py"), str(data),
                "--train", str(args.train), "--test", str(args.test), "--first",
            ]  # fmt: skip
            subprocess.run(command, check=True, capture_output=True)
        load_before = os.getloadavg()
        for method in methods:
            print(f"== {method}", flush=True)
            peer = rows[f"{method}: lightly 1.6 example"] = lightly_example(
                method, data, work, args
            )
            print(f"   lightly {peer}", flush=True)
            if args.examples_only:
                continue
            ours = rows[f"{method}: fastssl recipe"] = fastssl_recipe(method, data, work, args)
            ours["speedup"] = f"{peer['wall_s'] / ours['wall_s']:.2f}x"
            print(f"   fastssl {ours}", flush=True)
        if set(methods) - VIT_EXAMPLES:
            rows["random init (torchvision ResNet-18)"] = {
                "knn_top1": knn_top1(torchvision_resnet18(seed=args.seed), data)
            }
        # One random ViT per backbone (MSN's and PMSN's recipes share theirs).
        vits = {vit_backbone(method): method for method in sorted(set(methods) & VIT_EXAMPLES)}
        for backbone, method in vits.items():
            wrapper = baseline_wrapper(method, backbone)
            checkpoint = random_init_checkpoint(wrapper, backbone, args.seed, work / "vit.ckpt")
            row = score_checkpoint({}, checkpoint, data, work / "vit", args)
            rows[f"random init ({backbone})"] = row
        load_after = os.getloadavg()
    setup = {
        "methods": methods,
        "epochs": args.epochs,
        "data": args.data or f"first {args.train} / {args.test} Fashion-MNIST images",
        "input_size": 32,
        "backbone": "ResNet-18, standard stem (lightly: torchvision; fastssl: timm:resnet18); "
        "capi, msn, pmsn, dinov2: the recipe's ViT (dinov2's with LayerScale)",
        "eval": "weighted kNN k=200 t=0.1 on the test images, one function for every ResNet "
        "row; the ViT rows (capi, msn, pmsn, dinov2): fastssl eval knn linear --no-augment",
        "seed": args.seed,
        "example_precision": args.precision,
        "fastssl_recipes": not args.examples_only,
    }
    write_report(args.out, setup, rows, (load_before, load_after))
    table = markdown(rows)
    Path(args.out).with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
