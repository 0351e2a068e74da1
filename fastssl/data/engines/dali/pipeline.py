"""Compiles a list of ViewSpecs into one NVIDIA DALI pipeline.

One reader (image folder: ``fn.readers.file``; ``fastssl shards`` WebDataset output:
``fn.readers.webdataset`` with the DALI index files) feeds every view; each view then
runs the ViewSpec's operations in the order the torchvision engine runs them
(:mod:`fastssl.transforms.view_spec`):

    random resized crop -> flips -> rotation -> color jitter (random order of its parts)
    -> grayscale -> Gaussian blur -> solarization -> float (or fp16) CHW, normalized

The random resized crop is done while decoding (``fn.decoders.image_random_crop``: only
the crop's region of the JPEG is decoded) on the GPU path (``device="mixed"``) with at
most ``ROI_DECODE_MAX_VIEWS`` views; on the CPU, and for multi-crop (DINO, SwaV), the
image is decoded once and cropped per view (``fn.random_resized_crop``): measured on
500x375 JPEGs with two 224 px views, one CPU decode plus two crops is ~9 % faster than two
ROI decodes (``roi_decode`` forces either). Probabilistic operations use DALI
conditionals (``enable_conditionals=True``), so a sample that skips an operation costs
nothing. ``device="mixed"`` decodes on the GPU (nvJPEG) and every later operation follows
its input onto the GPU; the graph is otherwise the same as on the CPU, where it is tested.

Outputs, in order: one (B, 3, h, w) tensor per view, then for a folder the sample index
(int64, maps to path and class in Python), for shards the padded bytes of the sample's
``source_info`` (``tar:offset:member``) and of its ``.cls`` member.

Deviations from the torchvision engine (the parameter distributions are the same, which
tests/dali checks; pixel values may differ slightly):

* DALI rounds to uint8 where torchvision truncates.
* Hue is shifted by a rotation in YIQ space (torchvision shifts H in HSV), by the same
  fraction of the circle.
* Saturation and hue run as one YIQ operation placed where the first of the two was drawn
  in the random jitter order (they commute in YIQ: only the uint8 clamping between them is
  lost); it is the costliest CPU operation, so this halves its cost. For a sample that
  is then turned to grayscale both are skipped (grayscale keeps the luma, which they do
  not change).

Example:
    >>> from fastssl.transforms.view_spec import ViewSpec
    >>> pipe = build_pipeline(  # doctest: +SKIP
    ...     folder_reader("images/"), [ViewSpec(crop_size=96)] * 2, batch_size=32
    ... )
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fastssl.data.manifest import (
    DALI_IMAGE_EXTENSIONS,
    MANIFEST_NAME,
    check_webdataset_manifest,
    read_manifest,
    shard_path,
)
from fastssl.data.sources import ShardSpec, expand_spec, is_remote, is_shard_spec
from fastssl.transforms.view_spec import ViewSpec

# Extensions the WebDataset reader treats as the image member (DALI decodes all of them).
# ROI decoding decodes each view's crop separately: on the GPU it pays while the crops cost
# less than one full decode plus per-view crops, i.e. for two or three views.
ROI_DECODE_MAX_VIEWS = 3
# Weights of torchvision's rgb_to_grayscale (contrast blends towards this mean).
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
_JITTER_OPS = ("brightness", "contrast", "saturation", "hue")

Device = Literal["cpu", "mixed"]


def import_dali() -> Any:
    """Imports ``nvidia.dali`` or raises an ImportError that says how to install it."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn
        import nvidia.dali.types  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "backend='dali' needs NVIDIA DALI: pip install nvidia-dali-cuda120 (or -cuda130) "
            "from https://pypi.nvidia.com; or use backend='torch'"
        ) from error
    return dali


def dali_available() -> bool:
    """Whether NVIDIA DALI can be imported."""
    try:
        import_dali()
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ReaderSpec:
    """What the DALI reader reads, and how a sample index or shard key maps back.

    Attributes:
        kind: ``"folder"`` (``files``/``targets``/``names``) or ``"webdataset"``
            (``tars``/``indexes``).
        files: Absolute image paths (folder).
        targets: Class index of every file (folder).
        names: Key of every file: its path relative to the folder, as LightlyDataset names it.
        labels: What the reader outputs as ``index`` for each file (default: its position),
            so an epoch's own order (a sublist of the folder's files) maps back.
        tars: Shard paths (webdataset).
        indexes: DALI index path of every shard (webdataset).
        num_samples: Samples in the whole source.
    """

    kind: Literal["folder", "webdataset"]
    num_samples: int
    files: tuple[str, ...] = field(default=(), repr=False)
    targets: tuple[int, ...] = field(default=(), repr=False)
    names: tuple[str, ...] = field(default=(), repr=False)
    labels: tuple[int, ...] = field(default=(), repr=False)
    tars: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()


def folder_reader(root: str | os.PathLike[str]) -> ReaderSpec:
    """Lists an image folder the way ``LightlyDataset`` does (same order, targets, names)."""
    from fastssl.data.dataset import ImageFolderIndex

    index = ImageFolderIndex(os.fspath(root))
    files = tuple(os.path.abspath(path) for path, _ in index.samples)
    names = tuple(os.path.relpath(path, index.root) for path, _ in index.samples)
    return ReaderSpec(
        kind="folder",
        num_samples=len(files),
        files=files,
        targets=tuple(index.targets),
        names=names,
    )


def webdataset_reader(source: ShardSpec) -> ReaderSpec:
    """What DALI's WebDataset reader reads: a ``fastssl shards`` folder (its manifest), or
    local tars each with a DALI index beside it (``NAME.idx``, as DALI's ``wds2idx`` writes).

    Raises:
        FileNotFoundError: When a local path does not exist.
        ManifestError: When the manifest is damaged, or a shard or its DALI index is missing.
        UnsafeShardError: When a listed file lies outside the folder or is not a regular file.
        ValueError: When DALI cannot read these tars (:func:`dali_cannot_read` says why).
    """
    if isinstance(source, str | os.PathLike) and not is_shard_spec(source):
        root = os.fspath(source)
        manifest = read_manifest(root)
        where = os.path.join(root, MANIFEST_NAME)
        check_webdataset_manifest(manifest, where, verify=False)
        shards = manifest["shards"]
        tars = tuple(shard_path(root, where, i, shard["file"]) for i, shard in enumerate(shards))
        indexes = tuple(
            shard_path(root, where, i, shard["index"]) for i, shard in enumerate(shards)
        )
        return ReaderSpec(
            kind="webdataset", num_samples=int(manifest["num_samples"]), tars=tars, indexes=indexes
        )
    reason = dali_cannot_read(source)
    if reason is not None:
        raise ValueError(f"DALI cannot read {source!r}: {reason}; use backend='torch'")
    tars = tuple(expand_spec(source))
    indexes = tuple(_index_of(tar) for tar in tars)
    counts = [len(_indexed_samples(index)) for index in indexes]
    return ReaderSpec(kind="webdataset", num_samples=sum(counts), tars=tars, indexes=indexes)


def dali_cannot_read(source: ShardSpec, label_key: str = "cls") -> str | None:
    """Why DALI's WebDataset reader cannot read the tars ``source`` names, or None.

    DALI reads local tars through index files; it needs every sample to hold an image in a
    format it decodes and, for targets, a ``.cls`` member (``label_key="cls"``). A
    ``fastssl shards`` folder always qualifies.

    Args:
        source: A shard spec (:mod:`fastssl.data.sources`) or a ``fastssl shards`` folder.
        label_key: Where targets come from (``data.label_key``).
    """
    if label_key != "cls":
        return f"data.label_key={label_key!r} (DALI reads targets from .cls members)"
    if isinstance(source, str | os.PathLike) and not is_shard_spec(source):
        return None
    try:
        tars = expand_spec(source)
    except (OSError, ValueError) as error:
        return str(error)
    for tar in tars:
        if is_remote(tar) or not tar.endswith(".tar"):
            return f"{tar} is not a local .tar file"
        index = _index_of(tar)
        if not os.path.isfile(index):
            return f"{tar} has no DALI index {os.path.basename(index)} beside it"
        for key, extensions in _indexed_samples(index).items():
            if not extensions & set(DALI_IMAGE_EXTENSIONS):
                return f"sample {key!r} of {tar} has no image DALI decodes ({sorted(extensions)})"
            if "cls" not in extensions:
                return f"sample {key!r} of {tar} has no .cls member"
    return None


def _index_of(tar: str) -> str:
    return tar[: -len(".tar")] + ".idx"


def _indexed_samples(index: str) -> dict[str, set[str]]:
    """Sample key -> member extensions, from a DALI index (``v1.2 N`` then, per sample,
    ``ext offset size name`` groups)."""
    samples: dict[str, set[str]] = {}
    with open(index) as handle:
        header = handle.readline().split()
        if len(header) != 2 or not header[0].startswith("v"):
            raise ValueError(f"{index} is not a DALI index (first line {' '.join(header)!r})")
        for line in handle:
            fields = line.split()
            for ext, name in zip(fields[0::4], fields[3::4], strict=False):
                samples.setdefault(name.split(".", 1)[0], set()).add(ext)
    return samples


def output_names(num_views: int, kind: str) -> list[str]:
    """Names of the pipeline outputs, for ``DALIGenericIterator(output_map=...)``."""
    views = [f"view{i}" for i in range(num_views)]
    return views + (["index"] if kind == "folder" else ["key", "cls"])


def build_pipeline(
    reader: ReaderSpec,
    specs: Sequence[ViewSpec],
    *,
    batch_size: int,
    num_threads: int = 2,
    device: Device = "cpu",
    device_id: int | None = None,
    seed: int = 0,
    shard_id: int = 0,
    num_shards: int = 1,
    shuffle: bool = True,
    fp16: bool = False,
    roi_decode: bool | None = None,
    prefetch_queue_depth: int = 2,
) -> Any:
    """Builds (and ``build()``\\ s) the DALI pipeline of ``specs`` over ``reader``.

    Args:
        reader: From :func:`folder_reader` or :func:`webdataset_reader`.
        specs: One ViewSpec per view; views may differ in size (multi-crop).
        batch_size: Samples per batch.
        num_threads: CPU threads of the pipeline.
        device: ``"cpu"`` or ``"mixed"`` (GPU decode; everything after runs on the GPU).
        device_id: GPU index; None (CPU only) is required with ``device="cpu"`` on a
            machine without a GPU.
        seed: Seeds the reader's shuffle and every random draw (with ``shard_id``).
        shard_id: This process's shard (rank).
        num_shards: Number of shards (world size); shard i reads a contiguous 1/n-th.
        shuffle: Shuffle samples (DALI's seeded shuffle buffer).
        fp16: Output float16 instead of float32 (cast to bf16 in torch if wanted).
        roi_decode: Crop while decoding; None: on the GPU path with at most
            ``ROI_DECODE_MAX_VIEWS`` views.
        prefetch_queue_depth: Batches prepared ahead.

    Returns:
        A built ``nvidia.dali.Pipeline`` whose outputs are named by :func:`output_names`.

    Raises:
        ValueError: For an unknown device, an empty spec list, or bad shard numbers.
    """
    dali = import_dali()
    if device not in ("cpu", "mixed"):
        raise ValueError(f"device={device!r} is unknown: use 'cpu' or 'mixed'")
    if not specs:
        raise ValueError("specs is empty: pass at least one ViewSpec")
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(
            f"shard_id={shard_id}, num_shards={num_shards}: need 0 <= shard_id < num_shards"
        )
    if device == "mixed" and device_id is None:
        device_id = 0
    specs = list(specs)
    every_crop = all(spec.crop_size is not None for spec in specs)
    if roi_decode is None:
        roi_decode = device == "mixed" and len(specs) <= ROI_DECODE_MAX_VIEWS
    use_roi = roi_decode
    use_roi = use_roi and every_crop

    @dali.pipeline_def(enable_conditionals=True)
    def graph() -> tuple[Any, ...]:
        fn, types = dali.fn, dali.types
        common = {
            "random_shuffle": shuffle,
            "shard_id": shard_id,
            "num_shards": num_shards,
            "pad_last_batch": True,
            "name": "Reader",
            "seed": seed,
            "initial_fill": max(1, min(1024, reader.num_samples)),
        }
        extras: list[Any]
        if reader.kind == "folder":
            labels = list(reader.labels or range(reader.num_samples))
            encoded, index = fn.readers.file(files=list(reader.files), labels=labels, **common)
            extras = [fn.cast(index, dtype=types.INT64)]
        else:
            encoded, cls = fn.readers.webdataset(
                paths=list(reader.tars),
                index_paths=list(reader.indexes),
                ext=[";".join(DALI_IMAGE_EXTENSIONS), "cls"],
                missing_component_behavior="error",
                **common,
            )
            info = fn.get_property(encoded, key="source_info")
            extras = [fn.pad(info, fill_value=0), fn.pad(cls, fill_value=0)]
        decoded = None
        if not use_roi:
            decoded = fn.decoders.image(encoded, device=device, output_type=types.RGB)
        views = []
        for spec in specs:
            if use_roi:
                image = _decode_crop(fn, types, encoded, spec, device)
            else:
                image = _crop(fn, types, decoded, spec)
            views.append(_augment(fn, types, image, spec, fp16))
        return (*views, *extras)

    pipe = graph(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        # Ranks get different augmentations; the reader shards before shuffling, so the
        # split stays disjoint whatever the seed.
        seed=(seed * 1_000_003 + shard_id) % (2**31),
        prefetch_queue_depth=prefetch_queue_depth,
    )
    pipe.build()
    return pipe


# ---------------------------------------------------------------------------- operations
def _size(spec: ViewSpec) -> list[int]:
    size = spec.crop_size
    assert size is not None
    return [size, size] if isinstance(size, int) else [size[0], size[1]]


def _interp(types: Any, spec: ViewSpec) -> Any:
    return {
        "nearest": types.INTERP_NN,
        "bilinear": types.INTERP_LINEAR,
        "bicubic": types.INTERP_CUBIC,
    }[spec.interpolation]


def _decode_crop(fn: Any, types: Any, encoded: Any, spec: ViewSpec, device: str) -> Any:
    # Same sampler as torchvision's RandomResizedCrop: area uniform in crop_scale, aspect
    # ratio log-uniform in crop_ratio, 10 attempts, then a centered fallback.
    image = fn.decoders.image_random_crop(
        encoded,
        device=device,
        output_type=types.RGB,
        random_area=list(spec.crop_scale),
        random_aspect_ratio=list(spec.crop_ratio),
        num_attempts=10,
    )
    interp = _interp(types, spec)
    return fn.resize(
        image,
        size=_size(spec),
        interp_type=interp,
        antialias=spec.interpolation != "nearest",
    )


def _crop(fn: Any, types: Any, image: Any, spec: ViewSpec) -> Any:
    if spec.crop_size is None:
        return image
    return fn.random_resized_crop(
        image,
        size=_size(spec),
        random_area=list(spec.crop_scale),
        random_aspect_ratio=list(spec.crop_ratio),
        num_attempts=10,
        interp_type=_interp(types, spec),
        antialias=spec.interpolation != "nearest",
    )


def _coin(fn: Any, types: Any, probability: float) -> Any:
    return fn.random.coin_flip(probability=probability, dtype=types.BOOL)


def _augment(fn: Any, types: Any, image: Any, spec: ViewSpec, fp16: bool) -> Any:
    r"""Everything after the crop, on HWC uint8, ending in normalized CHW float.

    Python ``if``\ s on the spec decide what is in the graph; ``if``\ s on DALI nodes
    (inside the helpers) decide per sample.
    """
    # Flips commute with every later operation except rotation (all are per pixel or
    # isotropic), so without rotation the horizontal flip rides on crop_mirror_normalize.
    mirror: Any = _coin(fn, types, spec.hf_prob) if spec.hf_prob > 0 else False
    if spec.rr_prob > 0 and spec.hf_prob > 0:
        image = fn.flip(image, horizontal=fn.cast(mirror, dtype=types.INT32))
        mirror = False
    if spec.vf_prob > 0:
        vertical = fn.cast(_coin(fn, types, spec.vf_prob), dtype=types.INT32)
        image = fn.flip(image, horizontal=0, vertical=vertical)
    if spec.rr_prob > 0:
        image = _rotate(fn, types, image, spec)
    gray: Any = _coin(fn, types, spec.gray_prob) if spec.gray_prob > 0 else False
    if spec.cj_prob > 0 and _jitter_enabled(spec):
        image = _maybe_jitter(fn, types, image, spec, gray)
    if spec.gray_prob > 0:
        image = _grayscale(fn, image, gray)
    mirror_arg = fn.cast(mirror, dtype=types.INT32) if mirror is not False else 0
    if spec.blur_prob > 0:
        image = _blur(fn, types, image, spec)
    if spec.solarize_prob > 0:
        image = _solarize(fn, types, image, spec)
    if spec.normalize_mean is not None and spec.normalize_std is not None:
        mean = [255.0 * m for m in spec.normalize_mean]
        std = [255.0 * s for s in spec.normalize_std]
    else:
        mean, std = [0.0], [255.0]
    return fn.crop_mirror_normalize(
        image,
        dtype=types.FLOAT16 if fp16 else types.FLOAT,
        output_layout="CHW",
        mean=mean,
        std=std,
        mirror=mirror_arg,
    )


def _jitter_enabled(spec: ViewSpec) -> bool:
    return any(j > 0 for j in (spec.cj_bright, spec.cj_contrast, spec.cj_sat, spec.cj_hue))


def _maybe_jitter(fn: Any, types: Any, image: Any, spec: ViewSpec, gray: Any) -> Any:
    if _coin(fn, types, spec.cj_prob):
        image = _color_jitter(fn, types, image, spec, gray)
    return image


def _grayscale(fn: Any, image: Any, gray: Any) -> Any:
    if gray:
        # Saturation 0 in YIQ keeps the luma Y = 0.299 R + 0.587 G + 0.114 B in all three
        # channels: torchvision's grayscale with num_output_channels=3.
        image = fn.hsv(image, saturation=0.0)
    return image


def _blur(fn: Any, types: Any, image: Any, spec: ViewSpec) -> Any:
    if _coin(fn, types, spec.blur_prob):
        sigma = fn.random.uniform(range=list(spec.blur_sigmas))
        # Without a window DALI sizes it 2 * ceil(3 sigma) + 1, as fastssl's GaussianBlur.
        window = {} if spec.blur_kernel_size is None else {"window_size": spec.blur_kernel_size}
        image = fn.gaussian_blur(image, sigma=sigma, **window)
    return image


def _solarize(fn: Any, types: Any, image: Any, spec: ViewSpec) -> Any:
    if _coin(fn, types, spec.solarize_prob):
        # A 256-entry table: one pass over uint8, no float conversion.
        threshold = spec.solarize_threshold
        image = fn.lookup_table(
            image,
            keys=list(range(256)),
            values=[255 - v if v >= threshold else v for v in range(256)],
            dtype=types.UINT8,
        )
    return image


def _rotate(fn: Any, types: Any, image: Any, spec: ViewSpec) -> Any:
    degrees = spec.rr_degrees
    if degrees is None:
        angle = fn.random.uniform(values=[90.0])  # lightly's RandomRotate: a quarter turn
    elif isinstance(degrees, tuple):
        angle = fn.random.uniform(range=[float(degrees[0]), float(degrees[1])])
    else:
        angle = fn.random.uniform(range=[-float(degrees), float(degrees)])
    if _coin(fn, types, spec.rr_prob):
        # Positive DALI angles turn counter-clockwise as seen on screen, as torch.rot90.
        image = fn.rotate(
            image, angle=angle, keep_size=True, fill_value=0, interp_type=types.INTERP_NN
        )
    return image


def _jitter_orders(enabled: Sequence[str]) -> list[tuple[int, ...]]:
    """The order of the jitter's DALI operations for every order torchvision can draw.

    torchvision draws a uniform permutation of the enabled parts. Saturation and hue run
    as one YIQ operation (``fn.hsv``: they commute there, and it halves the cost of the
    most expensive CPU operation), placed where the first of the two was drawn. Returns,
    per permutation of ``enabled``, the order of the merged operations (indices into
    :func:`_jitter_groups`).
    """
    groups = _jitter_groups(enabled)
    group_of = {name: g for g, members in enumerate(groups) for name in members}
    orders = []
    for perm in itertools.permutations(enabled):
        order: list[int] = []
        for name in perm:
            if group_of[name] not in order:
                order.append(group_of[name])
        orders.append(tuple(order))
    return orders


def _jitter_groups(enabled: Sequence[str]) -> list[tuple[str, ...]]:
    singles = [(name,) for name in enabled if name in ("brightness", "contrast")]
    color = tuple(name for name in enabled if name in ("saturation", "hue"))
    return singles + ([color] if color else [])


def _color_jitter(fn: Any, types: Any, image: Any, spec: ViewSpec, gray: Any) -> Any:
    """torchvision's ColorJitter: each enabled part once, in a uniformly random order.

    ``gray`` (a per-sample bool, or False) says grayscale follows: it keeps only the luma,
    which saturation and hue do not change, so they are skipped for those samples.
    """
    strengths = {
        "brightness": spec.cj_bright,
        "contrast": spec.cj_contrast,
        "saturation": spec.cj_sat,
        "hue": spec.cj_hue,
    }
    enabled = [name for name in _JITTER_OPS if strengths[name] > 0]
    factors = {}
    for name in enabled:
        strength = strengths[name]
        if name == "hue":
            factors[name] = fn.random.uniform(range=[-strength, strength])
        else:
            factors[name] = fn.random.uniform(range=[max(0.0, 1.0 - strength), 1.0 + strength])
    groups = _jitter_groups(enabled)
    orders = _jitter_orders(enabled)
    order = fn.random.uniform(values=list(range(len(orders))), dtype=types.INT32)
    for step in range(len(groups)):
        # Which operation runs at this step, looked up from the drawn permutation.
        part = fn.lookup_table(
            order,
            keys=list(range(len(orders))),
            values=[perm[step] for perm in orders],
            dtype=types.INT32,
        )
        for position, members in enumerate(groups):
            if members[0] in ("brightness", "contrast"):
                if part == position:
                    image = _jitter_part(fn, image, members[0], factors[members[0]])
            elif part == position and not gray:
                saturation = factors["saturation"] if "saturation" in members else 1.0
                hue = factors["hue"] * 360.0 if "hue" in members else 0.0
                # hue is a fraction of the circle; DALI takes degrees.
                image = fn.hsv(image, saturation=saturation, hue=hue)
    return image


def _jitter_part(fn: Any, image: Any, name: str, factor: Any) -> Any:
    if name == "brightness":
        return fn.brightness(image, brightness=factor)
    # contrast: torchvision blends towards the mean gray level of the image.
    means = fn.reductions.mean(image, axes=[0, 1])
    center = sum(w * means[c] for c, w in enumerate(_GRAY_WEIGHTS))
    return fn.contrast(image, contrast=factor, contrast_center=center)
