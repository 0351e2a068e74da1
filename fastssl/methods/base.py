"""The contract every ready method fulfils, so the engine, the CLI and the tests can
drive any of them the same way.

A method is an ``nn.Module`` that owns its backbone, heads, loss, momentum or teacher
networks, its default views and the hyper-parameters of its paper. One call,
:meth:`Method.training_step`, takes the views of a batch and returns the loss; schedules
(EMA momentum, teacher temperature, frozen layers) are driven by the :class:`StepInfo`
passed in, so a method holds no hidden step counter and resumes exactly.

Example:
    >>> import torch
    >>> from fastssl import methods
    >>> model = methods.create("simclr", backbone="resnet18", input_size=32)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> loss = model.training_step(views, methods.StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from torch import Tensor, nn

from fastssl.models.backbones import build_backbone

T = TypeVar("T")


def build_views(
    cls: type[T],
    overrides: Mapping[str, Any],
    fixed: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> T:
    """``cls(**fixed, **defaults, **overrides)``: a method's view transform with a recipe's
    ``views:`` overrides, each checked against the arguments of ``cls``.

    Args:
        cls: A transform class of :mod:`fastssl.transforms` (e.g. ``SimCLRTransform``).
        overrides: The recipe's ``views`` keyword arguments (e.g. ``{"gaussian_blur": 0.0}``).
        fixed: Arguments the method derives from its own (``input_size``, view counts);
            overriding them is an error that says where to set them instead.
        defaults: The method's own choices for ``cls``, which ``overrides`` may replace.

    Raises:
        ValueError: For an argument ``cls`` does not take, or one in ``fixed``.

    Example:
        >>> from fastssl.transforms import SimCLRTransform
        >>> t = build_views(SimCLRTransform, {"gaussian_blur": 0.0}, {"input_size": 32})
        >>> t.view_specs[0].crop_size, t.view_specs[0].blur_prob
        (32, 0.0)
    """
    fixed, defaults = dict(fixed or {}), dict(defaults or {})
    allowed = [
        name
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in fixed
    ]
    for key in overrides:
        if key in fixed:
            raise ValueError(
                f"views.{key}: {cls.__name__}'s {key} is set by the method from its own "
                "arguments (data.input_size or method_kwargs): change it there"
            )
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean views.{close[0]}?)" if close else ""
            raise ValueError(
                f"views.{key}: {cls.__name__} has no argument {key!r}{hint}; allowed: "
                f"{', '.join(allowed)}"
            )
    return cls(**fixed, **{**defaults, **overrides})


def build_view_pair(
    pair: Callable[[Any, Any], T],
    view1: type,
    view2: type,
    overrides: Mapping[str, Any],
    input_size: int,
) -> T:
    """``pair(view1(...), view2(...))`` at ``input_size``, the same ``views`` overrides given
    to both views (BYOL-style asymmetric pairs); see :func:`build_views`."""
    fixed = {"input_size": input_size}
    return pair(build_views(view1, overrides, fixed), build_views(view2, overrides, fixed))


@dataclass(frozen=True)
class StepInfo:
    """Where training stands, for schedules that depend on progress."""

    step: int = 0  # optimizer steps done so far (0 at the first step)
    max_steps: int = 1  # total optimizer steps of the run
    epoch: int = 0  # current epoch (0-based)
    max_epochs: int = 1  # total epochs of the run

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return min(max(self.step / max(self.max_steps, 1), 0.0), 1.0)


@dataclass(frozen=True)
class OptimizerDefaults:
    """The optimizer of the method's paper, for the training engine."""

    name: Literal["sgd", "lars", "adamw"] = "sgd"
    lr: float = 0.06  # learning rate for a batch of `reference_batch_size`
    reference_batch_size: int = 256  # lr scales with batch_size / this
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    weight_decay: float = 5e-4
    momentum: float = 0.9  # SGD/LARS momentum
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    warmup_epochs: int = 10
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. LARS trust_coefficient

    @classmethod
    def lars(
        cls,
        lr: float,
        weight_decay: float,
        *,
        reference_batch_size: int = 256,
        lr_scaling: Literal["linear", "sqrt", "none"] = "linear",
        momentum: float = 0.9,
        warmup_epochs: int = 10,
        trust_coefficient: float = 0.001,
        **extra: Any,
    ) -> OptimizerDefaults:
        """The LARS recipe of the large-batch papers (SimCLR, BYOL, Barlow Twins, VICReg...).

        Args:
            lr: Learning rate for a batch of ``reference_batch_size``.
            weight_decay: Weight decay of the paper.
            reference_batch_size: Batch size ``lr`` is given for.
            lr_scaling: How ``lr`` scales with ``batch_size / reference_batch_size``.
            momentum: LARS momentum.
            warmup_epochs: Epochs of linear warm-up.
            trust_coefficient: LARS trust coefficient, stored in ``extra``.
            **extra: Further entries of ``extra`` (e.g. ``lr_biases``), kept in order
                before ``trust_coefficient``.

        Returns:
            ``OptimizerDefaults(name="lars", ...)`` with
            ``extra == {**extra, "trust_coefficient": trust_coefficient}``.

        Example:
            >>> OptimizerDefaults.lars(0.2, 1.5e-6, lr_biases=0.0048).extra
            {'lr_biases': 0.0048, 'trust_coefficient': 0.001}
        """
        return cls(
            name="lars",
            lr=lr,
            reference_batch_size=reference_batch_size,
            lr_scaling=lr_scaling,
            weight_decay=weight_decay,
            momentum=momentum,
            warmup_epochs=warmup_epochs,
            extra={**extra, "trust_coefficient": trust_coefficient},
        )


class Method(nn.Module):
    """Base class of the ready methods.

    Subclasses set :attr:`name`, build their heads and loss in ``__init__`` (calling
    ``super().__init__(backbone, input_size)`` first, which provides ``self.backbone``
    and ``self.feature_dim``), and implement :meth:`training_step` and
    :meth:`default_transform`. Arguments of subclasses default to their paper's values.

    Args:
        backbone: A backbone name for :func:`fastssl.models.backbones.build_backbone`
            (e.g. ``"resnet50"``, ``"vit_b_16"``, ``"timm:vit_small_patch16_224"``) or a
            module mapping images (B, 3, H, W) to features (B, D).
        input_size: Training resolution of the default (global) views, in pixels.
        feature_dim: D when ``backbone`` is a module (measured when None).
    """

    #: Registry name (``fastssl.methods.get(name)``).
    name: ClassVar[str] = ""
    #: The optimizer and learning rate of the paper.
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults()
    #: Attribute holding the EMA copy of the backbone (teacher / target / momentum
    #: encoder), for methods that keep one; see :meth:`ema_backbone`.
    ema_backbone_attr: ClassVar[str | None] = None
    #: The network the paper evaluates and ``fastssl eval`` / ``export`` use by default:
    #: ``"online"`` (the trained backbone) or ``"ema"`` (:meth:`ema_backbone`, e.g. DINO's
    #: teacher).
    eval_network: ClassVar[Literal["online", "ema"]] = "online"

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.backbone, self.feature_dim = build_backbone(backbone, input_size, feature_dim)

    def forward(self, images: Tensor) -> Tensor:
        """Backbone features of shape (B, D) for images of shape (B, 3, H, W)."""
        return self.backbone(images).flatten(start_dim=1)

    def training_step(self, views: Sequence[Tensor], info: StepInfo = StepInfo()) -> Tensor:
        """Computes the loss of one batch.

        Args:
            views: The views of the default transform, each of shape (B, 3, h, w)
                (multi-crop methods get global views first, then local ones).
            info: Training progress, for momentum / temperature schedules.

        Returns:
            The scalar loss to backpropagate.
        """
        raise NotImplementedError

    def before_optimizer_step(self, info: StepInfo) -> None:
        """Called after backward, before the optimizer step (e.g. to cancel the gradient
        of layers frozen early in training). Default: nothing."""

    def default_transform(self, **views: Any) -> Any:
        """The multi-view transform of the paper at ``self.input_size``.

        Args:
            **views: Keyword arguments for the transform class that replace the paper's
                (a recipe's ``views:`` section), e.g. ``gaussian_blur=0.0, min_scale=0.2``;
                methods with two view classes (BYOL-style) give them to both.

        Raises:
            ValueError: For an argument the transform class does not take.
        """
        raise NotImplementedError

    def ema_backbone(self) -> nn.Module | None:
        """The exponential-moving-average copy of the backbone (BYOL's target, DINO's
        teacher, MoCo's key encoder, ...), which some papers evaluate; None for methods
        without one. It maps images (B, 3, H, W) to features like :attr:`backbone`."""
        if self.ema_backbone_attr is None:
            return None
        module: nn.Module = getattr(self, self.ema_backbone_attr)
        return module

    def predictor_modules(self) -> list[nn.Module]:
        """The predictor, whose learning rate the engine keeps at its peak when
        ``optimizer.extra.fix_predictor_lr`` is set (SimSiam). Default: none."""
        return []

    def trainable_modules(self) -> list[nn.Module]:
        """Modules the optimizer updates (momentum / teacher copies excluded)."""
        return [self]
