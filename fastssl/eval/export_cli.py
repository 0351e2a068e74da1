"""``fastssl export CKPT --out F``: write a checkpoint's backbone weights for reuse.

The output is a plain ``state_dict`` (``torch.save``) of one backbone alone, with no
heads, projectors, other copies or Lightning state, plus a JSON sidecar ``F.json`` saying
what it is (method, network, backbone, feature_dim, input_size, format) and how to load it.

Which backbone (``--network``): by default the one the method's paper evaluates, as
``fastssl eval`` does (``Method.eval_network``): the EMA copy for DINO (its teacher), MSN
and PMSN (their target encoder) and other methods whose paper does so, the trained (online)
backbone otherwise; ``online`` or ``ema`` choose explicitly.

Formats:

* ``torch`` (default): the keys of fastssl's backbone module, loadable with
  ``strict=True`` into ``fastssl.models.backbones.build_backbone(backbone, input_size)[0]``.
* ``torchvision``: the keys of the plain torchvision model with its classifier replaced by
  ``nn.Identity()`` (``resnet.fc`` or ``vit.heads``), loadable with ``strict=True``. ResNets
  trained at <= 64 px use the CIFAR stem (3x3 stride-1 ``conv1``, no max-pool): set those
  on the torchvision model first (the sidecar says ``"cifar_stem": true``).

Example:
    >>> from fastssl.cli import main
    >>> main(["export", "last.ckpt", "--out", "resnet18.pt"])  # doctest: +SKIP
    0
    >>> model = torchvision.models.resnet18(); model.fc = torch.nn.Identity()  # doctest: +SKIP
    >>> model.load_state_dict(torch.load("resnet18.pt"))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import torch
from torch import nn

from fastssl.cli import EXIT_INTERNAL, exit_code, report_error
from fastssl.eval.checkpoint import NETWORKS, check_finite, load_method, select_backbone
from fastssl.models.backbones import SMALL_INPUT_SIZE, available_backbones

FORMATS = ("torch", "torchvision")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``fastssl export`` to ``parser``."""
    parser.description = __doc__.split("Example:")[0] if __doc__ else None
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("checkpoint", metavar="CKPT", help="`fastssl pretrain` checkpoint")
    parser.add_argument("--out", required=True, metavar="F", help="where to write the weights")
    parser.add_argument(
        "--format", choices=FORMATS, default="torch", help="key layout of the weights (torch)"
    )
    parser.add_argument(
        "--network", choices=NETWORKS, default="auto",
        help="auto: the network the method's paper evaluates (DINO: the teacher; default); "
        "online: the trained backbone; ema: its EMA copy",
    )  # fmt: skip


def backbone_state_dict(backbone: nn.Module, backbone_name: str, fmt: str) -> dict[str, Any]:
    """The backbone's weights in the key layout of ``fmt`` (see the module docstring).

    Raises:
        ValueError: For an unknown format, or ``"torchvision"`` with a backbone that is
            not a torchvision model.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is unknown: choose one of {', '.join(FORMATS)}")
    state = {key: value.detach().clone() for key, value in backbone.state_dict().items()}
    if fmt == "torch":
        return state
    if backbone_name not in available_backbones():
        raise ValueError(
            "--format torchvision needs a torchvision backbone "
            f"({', '.join(available_backbones())}); "
            f"this checkpoint's backbone is {backbone_name!r}: use --format torch"
        )
    if backbone_name.startswith("vit_"):
        # fastssl wraps torchvision's ViT as `.vit` to return the class token.
        return {key.removeprefix("vit."): value for key, value in state.items()}
    return state  # fastssl's ResNets are torchvision ResNets with fc = Identity


def export(checkpoint: str, out: str, fmt: str = "torch", network: str = "auto") -> dict[str, Any]:
    """Writes the backbone weights of ``checkpoint`` to ``out`` and the sidecar ``out.json``.

    Args:
        checkpoint: A ``fastssl pretrain`` checkpoint.
        out: Where to write the weights.
        fmt: Key layout, one of :data:`FORMATS`.
        network: ``"auto"``, ``"online"`` or ``"ema"`` (see
            :func:`~fastssl.eval.checkpoint.select_backbone`).

    Returns:
        The sidecar's content.

    Raises:
        CheckpointError: When the checkpoint cannot be loaded (names the file).
        ValueError: See :func:`backbone_state_dict` and
            :func:`~fastssl.eval.checkpoint.select_backbone`; CheckpointError (a ValueError)
            for a backbone whose weights or statistics are not finite.
    """
    model, info = load_method(checkpoint)
    backbone, chosen = select_backbone(model, network)
    state = backbone_state_dict(backbone, info.backbone_name, fmt)
    check_finite(backbone, checkpoint)  # a diverged run's backbone is not exported
    input_size = int(model.input_size)
    name = info.backbone_name
    cifar_stem = name.startswith(("resnet", "wide_resnet", "resnext")) and (
        input_size <= SMALL_INPUT_SIZE
    )
    if fmt == "torch":
        how = (
            f"fastssl.models.backbones.build_backbone({name!r}, {input_size})[0]"
            ".load_state_dict(torch.load(F))"
        )
    elif name.startswith("vit_"):
        how = f"torchvision.models.{name}(image_size={input_size}) with heads = nn.Identity()"
    else:
        how = f"torchvision.models.{name}() with fc = nn.Identity()" + (
            "; conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False), maxpool = nn.Identity()"
            if cifar_stem
            else ""
        )
    sidecar = {
        "method": info.method,
        "network": chosen,
        "backbone": name,
        "feature_dim": int(model.feature_dim),
        "input_size": input_size,
        "format": fmt,
        "cifar_stem": cifar_stem,
        "num_tensors": len(state),
        "checkpoint": os.path.abspath(checkpoint),
        "load_into": how,
    }
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    torch.save(state, out)
    with open(sidecar_path(out), "w") as handle:
        json.dump(sidecar, handle, indent=2)
        handle.write("\n")
    return sidecar


def sidecar_path(out: str) -> str:
    """The sidecar of weights written to ``out``: ``out + ".json"``."""
    return out + ".json"


def run(args: argparse.Namespace) -> int:
    """Runs ``fastssl export``; returns the exit code (0 done, 2 bad input)."""
    try:
        sidecar = export(args.checkpoint, args.out, args.format, args.network)
    except Exception as error:  # user errors: one line (exit 2); bugs propagate
        if exit_code(error) == EXIT_INTERNAL:
            raise
        return report_error("fastssl export", error)
    print(
        f"wrote {sidecar['num_tensors']} tensors of the {sidecar['backbone']} backbone "
        f"({sidecar['method']} {sidecar['network']} network, D={sidecar['feature_dim']}, "
        f"{sidecar['input_size']} px) to "
        f"{args.out} and {sidecar_path(args.out)}"
    )
    return 0
