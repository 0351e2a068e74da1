"""Constants and helpers shared by the transforms."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

# Channel statistics of ImageNet-1k (RGB, [0, 1] range), the normalisation every method of
# lightly 1.6 uses by default. Same name and layout as ``lightly.transforms.utils``.
IMAGENET_NORMALIZE: dict[str, list[float]] = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}

# Names in a method's ``locals()`` that are not its arguments: the instance, and the cell
# that a ``super()`` call in the method adds.
_NOT_ARGUMENTS = frozenset({"self", "__class__"})


def lightly_arguments(
    arguments: Mapping[str, Any],
    *,
    exclude: Collection[str] = (),
    rename: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Turns a constructor's ``locals()`` into the keyword arguments it hands on.

    The transforms keep lightly 1.6's explicit signatures and forward most of their arguments
    unchanged, to ``ViewSpec.from_lightly_args`` or to a view transform;
    ``callee(**lightly_arguments(locals()))`` does that without naming every argument twice.
    Call it before ``__init__`` binds any other local variable: every name in ``arguments``
    but ``self`` and ``__class__`` is forwarded, and the callee raises ``TypeError`` on a name
    it does not take.

    Args:
        arguments: The caller's ``locals()``.
        exclude: Names not to forward (the caller passes them on itself, or uses them).
        rename: ``{caller's name: callee's name}`` for arguments forwarded under another name.

    Returns:
        A new dict in the order of ``arguments``, renamed keys in their place.

    Raises:
        ValueError: If ``exclude`` or ``rename`` names a key that ``arguments`` lacks, if a key
            is both excluded and renamed, or if two keys would be forwarded under one name.

    >>> def view(self, crop_size=32, hf_prob=0.5, n_views=2):
    ...     return lightly_arguments(locals(), exclude=["n_views"], rename={"crop_size": "size"})
    >>> view(None)
    {'size': 32, 'hf_prob': 0.5}
    """
    rename = {} if rename is None else rename
    unknown = sorted((set(exclude) | set(rename)) - set(arguments))
    if unknown:
        raise ValueError(
            f"lightly_arguments: exclude/rename name(s) {unknown} that are not among the "
            f"arguments {sorted(set(arguments) - _NOT_ARGUMENTS)}."
        )
    both = sorted(set(exclude) & set(rename))
    if both:
        raise ValueError(f"lightly_arguments: {both} both excluded and renamed.")
    forwarded: dict[str, Any] = {}
    for name, value in arguments.items():
        if name in _NOT_ARGUMENTS or name in exclude:
            continue
        key = rename.get(name, name)
        if key in forwarded:
            raise ValueError(f"lightly_arguments: two arguments are forwarded as {key!r}.")
        forwarded[key] = value
    return forwarded


def check_view_count(name: str, count: object) -> None:
    """Raises a ValueError naming the argument unless ``count`` (views) is an int >= 0."""
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"{name} must be an int >= 0, got {count!r}.")


def cropped_view_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``lightly_arguments`` of a view transform taking ``crop_size`` and ``crop_scale``
    (DINO's, MSN's), in ``ViewSpec.from_lightly_args``'s terms: ``input_size``, ``min_scale``
    and ``max_scale``."""
    crop_scale = arguments["crop_scale"]
    forwarded = lightly_arguments(
        arguments, exclude=("crop_scale",), rename={"crop_size": "input_size"}
    )
    return {**forwarded, "min_scale": crop_scale[0], "max_scale": crop_scale[1]}
