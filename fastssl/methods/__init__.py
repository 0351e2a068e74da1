"""The ready methods and their registry.

``list_methods()`` names them; ``get(name)`` returns the class; ``create(name, **kwargs)``
builds one. The table below is the registry: modules are imported only when a method is
asked for, and nothing registers itself by import side effects.

Example:
    >>> from fastssl import methods
    >>> "simclr" in methods.list_methods()
    True
"""

from __future__ import annotations

import importlib
from typing import Any

from fastssl.methods.base import Method, OptimizerDefaults, StepInfo

#: name -> "module:Class"
_REGISTRY: dict[str, str] = {
    "aim": "fastssl.methods.aim:AIM",
    "barlowtwins": "fastssl.methods.barlowtwins:BarlowTwins",
    "byol": "fastssl.methods.byol:BYOL",
    "capi": "fastssl.methods.capi:CAPI",
    "dcl": "fastssl.methods.dcl:DCL",
    "dclw": "fastssl.methods.dcl:DCLW",
    "densecl": "fastssl.methods.densecl:DenseCL",
    "detconb": "fastssl.methods.detcon:DetConB",
    "detcons": "fastssl.methods.detcon:DetConS",
    "dino": "fastssl.methods.dino:DINO",
    "dinov2": "fastssl.methods.dinov2:DINOv2",
    "directclr": "fastssl.methods.directclr:DirectCLR",
    "fastsiam": "fastssl.methods.fastsiam:FastSiam",
    "ijepa": "fastssl.methods.ijepa:IJEPA",
    "lejepa": "fastssl.methods.lejepa:LeJEPA",
    "mae": "fastssl.methods.mae:MAE",
    "mmcr": "fastssl.methods.mmcr:MMCR",
    "moco": "fastssl.methods.moco:MoCo",
    "msn": "fastssl.methods.msn:MSN",
    "nnclr": "fastssl.methods.nnclr:NNCLR",
    "pmsn": "fastssl.methods.msn:PMSN",
    "simclr": "fastssl.methods.simclr:SimCLR",
    "simmim": "fastssl.methods.simmim:SimMIM",
    "simsiam": "fastssl.methods.simsiam:SimSiam",
    "smog": "fastssl.methods.smog:SMoG",
    "swav": "fastssl.methods.swav:SwaV",
    "tico": "fastssl.methods.tico:TiCo",
    "vicreg": "fastssl.methods.vicreg:VICReg",
    "vicregl": "fastssl.methods.vicregl:VICRegL",
    "wmse": "fastssl.methods.wmse:WMSE",
}


def list_methods() -> list[str]:
    """Names of the ready methods, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Method]:
    """The method class of a registry name (case-insensitive) or a ``"package.module:Class"``.

    The one resolver of method names: recipes, checkpoints and the CLI all call it, so a
    user's own Method subclass works wherever a registered one does.

    Raises:
        ValueError: For an unknown name (listing the known ones) or a path that names no
            Method subclass.
        ImportError: When the path's module cannot be imported.

    Example:
        >>> get("SimCLR").__name__, get("fastssl.methods.byol:BYOL").__name__
        ('SimCLR', 'BYOL')
    """
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        found = getattr(importlib.import_module(module_name), class_name, None)
        if not (isinstance(found, type) and issubclass(found, Method)):
            raise ValueError(f"method {name!r} does not name a fastssl.methods.Method subclass")
        return found
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(list_methods())}")
    module_name, class_name = _REGISTRY[key].split(":")
    cls: type[Method] = getattr(importlib.import_module(module_name), class_name)
    return cls


def create(name: str, **kwargs: Any) -> Method:
    """Builds the method ``name`` with ``kwargs`` (backbone, input_size, hyper-parameters)."""
    return get(name)(**kwargs)


__all__ = ["Method", "OptimizerDefaults", "StepInfo", "create", "get", "list_methods"]
