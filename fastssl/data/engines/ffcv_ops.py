"""The FFCV pipeline operations of the FFCV engine, and its seeded epoch iterator.

Imported only when an FFCV loader is made (it imports FFCV). The pipeline, for ``V`` views:

* :class:`ViewsDecoder` (FFCV's compiled stage, one parallel loop over the batch): reads
  each image once, decodes a JPEG once at the largest DCT reduction that keeps every crop
  at least as large as its output (a stored raw image is used as is), then makes every
  view from it with :func:`fastssl.data.engines.ffcv_kernels.augment_view`: crop and
  antialiased resize, flips, rotation, color jitter, grayscale, blur, solarization. Its
  output is one uint8 (B, 3, h_v, w_v) array per view.
* :class:`ViewsToTensors` (FFCV's Python stage): scales and normalizes each view into a
  float32 / float16 / bfloat16 tensor taken from a :class:`TensorPool`, so that a batch the
  caller still holds is never overwritten.
* :class:`TargetsToTensor`: the labels as a (B,) int64 tensor.

The random parameters of every view of every sample are drawn in Python before the batch
runs (:class:`SeededEpoch` calls the engine's filler, which writes them into the decoder's
parameter buffer), so FFCV's numba code is deterministic.

Example:
    >>> from fastssl.data.engines.ffcv_ops import ViewsDecoder  # doctest: +SKIP
    >>> decoder = ViewsDecoder([(224, 224), (224, 224)])  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from queue import Full
from typing import Any

import numba
import numpy as np
import torch
from ffcv.fields.rgb_image import IMAGE_MODES
from ffcv.libffcv import imdecode
from ffcv.loader.epoch_iterator import EpochIterator, select_buffer
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

from fastssl.data.engines import ffcv_kernels
from fastssl.data.engines.ffcv_kernels import COL, NUM_COLUMNS
from fastssl.transforms import batched


class ViewsDecoder(Operation):
    """Decodes each image once and makes all of its views (FFCV decoder of ``RGBImageField``).

    Its memory is ``(parameters, view_0, ..., view_{V-1})``: the (B, V, NUM_COLUMNS) float64
    parameter rows (filled per batch by :class:`SeededEpoch`; the decoder writes the decode
    status into column ``status`` of view 0) and one uint8 (B, 3, h, w) array per view.

    Args:
        sizes: The (height, width) of every view.

    Example:
        >>> decoder = ViewsDecoder([(224, 224), (224, 224), (96, 96)])  # doctest: +SKIP
        >>> pipelines = {"image": PipelineSpec("image", decoder=decoder)}  # doctest: +SKIP
    """

    def __init__(self, sizes: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        if not sizes:
            raise ValueError("ViewsDecoder needs at least one view size")
        self.sizes = [(int(h), int(w)) for h, w in sizes]

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, Any]:
        """A tuple of uint8 views; memory for the parameters and every view."""
        queries = (AllocationQuery((len(self.sizes), NUM_COLUMNS), np.dtype(np.float64)),)
        queries += tuple(AllocationQuery((3, h, w), np.dtype(np.uint8)) for h, w in self.sizes)
        state = replace(previous_state, jit_mode=True, shape=(len(self.sizes),), dtype=np.uint8)
        return state, queries

    def generate_code(self) -> Callable[..., Any]:
        """The batch loop FFCV compiles (parallel over samples when it has several threads)."""
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        decode_jpeg = Compiler.compile(imdecode)
        augment = ffcv_kernels.kernels()["augment_view"]
        jpg = IMAGE_MODES["jpg"]
        views = len(self.sizes)
        c_scale, c_status = COL["scale"], COL["status"]

        def decode(batch_indices: Any, memory: Any, metadata: Any, storage_state: Any) -> Any:
            params = memory[0]
            outs = memory[1:]
            for i in my_range(len(batch_indices)):
                field = metadata[batch_indices[i]]
                data = mem_read(field["data_ptr"], storage_state)
                height, width = int(field["height"]), int(field["width"])
                rows = params[i]
                if field["mode"] == jpg:
                    reduction = int(rows[0, c_scale])
                    decoded_h = (height + reduction - 1) // reduction
                    decoded_w = (width + reduction - 1) // reduction
                    image = np.empty((decoded_h, decoded_w, 3), np.uint8)
                    status = decode_jpeg(
                        data, image, height, width, height, width, 0, 0, 1, reduction, False, False
                    )
                    rows[0, c_status] = status
                    if status != 0:  # a damaged JPEG: a black image, reported by the engine
                        image[:] = 0
                    for v in range(views):
                        augment(image, reduction, rows[v], outs[v][i])
                else:
                    raw = data.reshape(height, width, 3)
                    for v in range(views):
                        augment(raw, 1, rows[v], outs[v][i])
            return outs

        decode.is_parallel = True  # type: ignore[attr-defined]
        return decode


class TensorPool:
    """Output tensors reused once nobody else holds them (no fresh memory per batch).

    :meth:`take` hands out a new alias of a pooled tensor whose storage only the pool still
    references (torch's storage use count), else a freshly allocated one, kept for later up
    to ``keep`` tensors. A batch the caller holds, or any view of it, is never handed out
    again. Thread-safe.

    Args:
        keep: How many tensors the pool keeps at most.

    Example:
        >>> pool = TensorPool(keep=2)  # doctest: +SKIP
        >>> held = pool.take((2, 3), torch.float32)  # doctest: +SKIP
        >>> pool.take((2, 3), torch.float32).data_ptr() != held.data_ptr()  # doctest: +SKIP
        True
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._tensors: list[torch.Tensor] = []
        self._lock = threading.Lock()
        self._use_count = getattr(torch._C, "_storage_Use_Count", None)

    def _unused(self, tensor: torch.Tensor) -> bool:
        if self._use_count is None:  # no way to tell: never reuse
            return False
        # Two references: the pooled tensor's and the temporary storage object's.
        return int(self._use_count(tensor.untyped_storage()._cdata)) <= 2

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialized tensor of ``shape`` and ``dtype`` that nobody else holds."""
        with self._lock:
            for tensor in self._tensors:
                if tensor.shape == shape and tensor.dtype == dtype and self._unused(tensor):
                    return tensor.view(shape)
            tensor = torch.empty(shape, dtype=dtype)
            if len(self._tensors) >= self.keep:
                self._tensors = [t for t in self._tensors if not self._unused(t)]
            if len(self._tensors) < self.keep:
                self._tensors.append(tensor)
            return tensor.view(shape)


def _per_channel(values: torch.Tensor) -> Any:
    """(1, C, 1, 1) coefficients as a contiguous float32 array of 3 (one value: repeated)."""
    flat = values.reshape(-1)
    return np.ascontiguousarray((flat.expand(3) if flat.numel() == 1 else flat).numpy())


def _bfloat16_bits(values: Any) -> Any:
    return torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


class ViewsToTensors(Operation):
    """FFCV's Python stage: uint8 views to normalized float tensors from a :class:`TensorPool`.

    Each view ``v`` becomes ``x / 255 * 1 / std - mean / std`` (or ``x / 255`` without
    normalization): float32 computed directly; float16 and bfloat16 looked up per channel
    from the float32 values of the 256 levels, rounded once.

    Args:
        normalizations: Per view, ``(mean, std)`` or None.
        dtype: float32, float16 or bfloat16.
        pool: Where the output tensors come from.
    """

    def __init__(
        self,
        normalizations: Sequence[tuple[Sequence[float], Sequence[float]] | None],
        dtype: torch.dtype,
        pool: TensorPool,
    ) -> None:
        super().__init__()
        self.dtype, self.pool = dtype, pool
        self.coefficients = []
        self.tables = []
        levels = np.arange(256, dtype=np.float32)[:, None]
        for normalization in normalizations:
            mean, std = normalization if normalization is not None else (None, None)
            scale, shift = batched.normalize_coefficients(
                None if mean is None else tuple(mean), None if std is None else tuple(std)
            )
            scales, shifts = _per_channel(scale), _per_channel(shift)
            if scales.shape != (3,):
                raise ValueError(
                    f"normalize_mean={mean}: FFCV views have 3 channels; give 1 or 3 values"
                )
            self.coefficients.append((scales, shifts))
            values = (levels * scales[None, :] + shifts[None, :]).astype(np.float32)
            if dtype == torch.float16:
                self.tables.append(values.astype(np.float16).view(np.uint16))
            elif dtype == torch.bfloat16:
                self.tables.append(_bfloat16_bits(np.ascontiguousarray(values)))
            else:
                self.tables.append(None)

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, None]:
        """A Python (non-jitted) stage without memory of its own."""
        return replace(previous_state, jit_mode=False, dtype=self.dtype), None

    def convert(self, views: Sequence[Any]) -> list[torch.Tensor]:
        """The views of one batch as tensors (N, 3, h, w) of ``dtype``."""
        outs = []
        for index, images in enumerate(views):
            out = self.pool.take(tuple(images.shape), self.dtype)
            table = self.tables[index]
            if table is None:
                scales, shifts = self.coefficients[index]
                ffcv_kernels.normalize_views(images, scales, shifts, out.numpy())
            else:
                bits = out.view(torch.int16).numpy().view(np.uint16)
                ffcv_kernels.lookup_views(images, table, bits)
            outs.append(out)
        return outs

    def generate_code(self) -> Callable[..., Any]:
        """The Python function FFCV calls with the decoder's views."""

        def to_tensors(views: Any, _memory: Any) -> list[torch.Tensor]:
            return self.convert(views)

        return to_tensors


class TargetsToTensor(Operation):
    """FFCV's Python stage for labels: a fresh (B,) int64 tensor (``IntDecoder`` gives (B, 1))."""

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, None]:
        """A Python stage without memory."""
        return replace(previous_state, jit_mode=False), None

    def generate_code(self) -> Callable[..., Any]:
        """Copies the labels out of FFCV's reused buffer."""

        def to_tensor(labels: Any, _memory: Any) -> torch.Tensor:
            return torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1).copy())

        return to_tensor


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class SeededEpoch(EpochIterator):
    """FFCV's epoch iterator, with each batch's parameters filled in before it runs.

    Before FFCV's stages run on a batch, ``fill(batch_indices, parameters)`` writes the
    parameter rows of its samples into the decoder's memory. Unlike FFCV's own iterator it
    leaves torch's thread count alone (FFCV sets it to its thread count), and an error in
    the pipeline is raised by ``__next__`` instead of leaving the consumer waiting.

    Args:
        loader: The ``ffcv.loader.Loader`` whose compiled pipeline runs.
        order: The samples of this epoch (for this rank), in order.
        fill: Writes the parameters of a batch: ``fill(indices, rows)`` with rows the
            (n, V, NUM_COLUMNS) float64 array.
        decoder_node: The graph node id of the :class:`ViewsDecoder`.
        threads: numba threads of the pipeline.
        check: Called as ``check(indices, rows)`` after the batch ran (the decoder wrote each
            sample's decode status into its rows), or None.
    """

    current_batch_slot: int  # FFCV's: the memory slot of the next batch

    def __init__(
        self,
        loader: Any,
        order: Any,
        fill: Callable[[Any, Any], None],
        decoder_node: int,
        threads: int,
        check: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self._fill = fill
        self._check = check
        self._decoder_node = decoder_node
        self._threads = threads
        super().__init__(loader, order)

    def run_pipeline(self, b_ix: int, batch_indices: Any, batch_slot: int, cuda_event: Any) -> Any:
        """Fills the batch's parameters, then runs FFCV's stages on it."""
        memory = self.memory_allocations["operation"][self._decoder_node]
        rows = select_buffer(memory, batch_slot, len(batch_indices))[0]
        self._fill(batch_indices, rows)
        result = super().run_pipeline(b_ix, batch_indices, batch_slot, cuda_event)
        if self._check is not None:
            self._check(batch_indices, rows)
        return result

    def run(self) -> None:
        """The producer thread: every batch of the epoch, then None (or the failure)."""
        try:
            numba.set_num_threads(self._threads)
            slots = self.loader.batches_ahead + 2
            for b_ix, indices in enumerate(self.iter_ixes):
                slot = self.current_batch_slot
                self.current_batch_slot = (slot + 1) % slots
                if not self._put((slot, self.run_pipeline(b_ix, indices, slot, None))):
                    return
            self._put(None)
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_Failure(error))

    def _put(self, item: Any) -> bool:
        while not self.terminate_event.is_set():
            try:
                self.output_queue.put(item, block=True, timeout=0.5)
                return True
            except Full:
                pass
        return False

    def __next__(self) -> Any:
        item = self.output_queue.get()
        if item is None:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise RuntimeError(f"the FFCV pipeline failed: {item.error!r}") from item.error
        return item[1]
