"""Saving and loading embeddings as CSV, and the JSON files of custom metadata, prediction
tasks and schemas (LightlySSL's ``lightly.utils.io``).

The embeddings CSV has the header ``filenames,embedding_0,...,embedding_{D-1},labels`` and
one row per image: its filename, its D embedding values and its integer label. The files
are interchangeable with LightlySSL's (same header, same number formatting).

Example:
    >>> import numpy as np, tempfile
    >>> path = tempfile.mktemp(suffix=".csv")
    >>> save_embeddings(path, np.eye(2, dtype=np.float32), [0, 1], ["a.png", "b.png"])
    >>> embeddings, labels, filenames = load_embeddings(path)
    >>> embeddings.tolist(), labels, filenames
    ([[1.0, 0.0], [0.0, 1.0]], [0, 1], ['a.png', 'b.png'])
"""

from __future__ import annotations

import csv
import json
import re
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

# A column of embedding values; matched at the start of the name, as LightlySSL does.
_EMBEDDING_COLUMN = re.compile(r"embedding_\d+")
# Columns kept by check_embeddings(remove_additional_columns=True).
_KEPT_COLUMN = re.compile(r"filenames|(embedding_\d+)|labels")
# Columns LightlySSL allows among the embedding columns.
_SPECIAL_COLUMNS = ("masked", "selected")


def _read_rows(path: str) -> list[list[str]]:
    with open(path, newline="") as file:
        return list(csv.reader(file, delimiter=","))


def _write_rows(path: str, rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as file:
        csv.writer(file, delimiter=",").writerows(rows)


def check_embeddings(path: str, remove_additional_columns: bool = False) -> None:
    """Checks that an embeddings CSV has the expected format.

    The header must start with ``filenames``, have a ``labels`` column and only
    ``embedding_<i>`` (or ``masked`` / ``selected``) columns in between, with no
    whitespace around names; the body must have no empty rows.

    Args:
        path: The CSV file.
        remove_additional_columns: Rewrite the file keeping only the ``filenames``,
            ``embedding_<i>`` and ``labels`` columns.

    Raises:
        RuntimeError: Naming the first problem found.
    """
    with open(path, newline="") as file:
        reader = csv.reader(file, delimiter=",")
        header = next(reader, [])
        _check_header(header)
        for line, row in enumerate(reader):  # streamed: embedding files can be large
            if not row:
                raise RuntimeError(
                    f"Embeddings csv file must not have empty rows. Found empty row on line {line}."
                )
    if remove_additional_columns:
        keep = [index for index, name in enumerate(header) if _KEPT_COLUMN.match(name)]
        _write_rows(path, [[row[index] for index in keep] for row in _read_rows(path)])


def _check_header(header: list[str]) -> None:
    if any(name != name.strip() for name in header):
        raise RuntimeError("Embeddings csv file must not contain whitespaces.")
    if not header or header[0] != "filenames":
        first = header[0] if header else None
        raise RuntimeError(
            f"Embeddings csv file must start with `filenames` column but had {first} instead."
        )
    if "labels" not in header:
        raise RuntimeError("Embeddings csv file has no `labels` column.")
    for name in header[1 : header.index("labels")]:
        if not _EMBEDDING_COLUMN.match(name) and name not in _SPECIAL_COLUMNS:
            raise RuntimeError(
                f"Embeddings csv file must have `embedding_x` columns but found {name} instead."
            )


def save_embeddings(
    path: str, embeddings: NDArray[np.float64], labels: list[int], filenames: list[str]
) -> None:
    """Writes embeddings, labels and filenames to a CSV file (format: module docstring).

    Args:
        path: The CSV file to write.
        embeddings: Array of shape (N, D).
        labels: N integer labels.
        filenames: N filenames.

    Raises:
        ValueError: If the three inputs differ in length.
    """
    if not len(embeddings) == len(labels) == len(filenames):
        raise ValueError(
            "Length of embeddings, labels, and filenames should be equal "
            f" but are not: ({len(embeddings)}, {len(filenames)}, {len(labels)})"
        )
    dim = embeddings.shape[-1]
    header = ["filenames", *(f"embedding_{i}" for i in range(dim)), "labels"]
    # The values are written as numpy scalars (csv calls str() on them), which prints
    # float32 values in their shortest form, exactly as LightlySSL's files.
    body = [
        [filename, *embedding, str(label)]
        for filename, embedding, label in zip(filenames, embeddings, labels, strict=True)
    ]
    _write_rows(path, [header, *body])


def load_embeddings(path: str) -> tuple[NDArray[np.float64], list[int], list[str]]:
    """Reads an embeddings CSV (checked with :func:`check_embeddings` first).

    Args:
        path: The CSV file.

    Returns:
        ``(embeddings, labels, filenames)`` in file order: a float64 array of shape
        (N, D) (every column between ``filenames`` and the last one), N integer labels
        (the last column) and N filenames.

    Raises:
        RuntimeError: If the file's format is wrong.
    """
    check_embeddings(path)
    header, *rows = _read_rows(path)
    filenames = [row[0] for row in rows]
    labels = [int(row[-1]) for row in rows]
    values = np.array([row[1:-1] for row in rows], dtype=np.float64)
    return values.reshape(len(rows), len(header) - 2), labels, filenames


def load_embeddings_as_dict(
    path: str, embedding_name: str = "default", return_all: bool = False
) -> dict[str, Any] | tuple[dict[str, Any], NDArray[np.float64], list[int], list[str]]:
    """Reads an embeddings CSV into a JSON-serialisable dictionary.

    Args:
        path: The CSV file.
        embedding_name: Stored under ``"embeddingName"``.
        return_all: Also return what :func:`load_embeddings` returns.

    Returns:
        ``{"embeddingName": embedding_name, "embeddings": [{"fileName": ..., "value":
        [...], "label": ...}, ...]}``, or with ``return_all`` the tuple
        ``(dictionary, embeddings, labels, filenames)``.
    """
    embeddings, labels, filenames = load_embeddings(path)
    data = {
        "embeddingName": embedding_name,
        "embeddings": [
            {"fileName": filename, "value": embedding.tolist(), "label": label}
            for embedding, filename, label in zip(embeddings, filenames, labels, strict=True)
        ],
    }
    if return_all:
        return data, embeddings, labels, filenames
    return data


class COCO_ANNOTATION_KEYS:
    """Keys of a COCO-style annotation file, plus the keys of custom metadata."""

    images: str = "images"
    images_id: str = "id"
    images_filename: str = "file_name"
    custom_metadata: str = "metadata"
    custom_metadata_image_id: str = "image_id"


def format_custom_metadata(custom_metadata: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    """Turns ``(filename, metadata dict)`` pairs into a COCO-style dictionary.

    Args:
        custom_metadata: ``[(filename, {key: value, ...}), ...]``.

    Returns:
        ``{"images": [{"id": i, "file_name": filename}, ...], "metadata": [{"image_id": i,
        **metadata}, ...]}``, ``i`` being the position in ``custom_metadata``.

    Example:
        >>> format_custom_metadata([("a.png", {"people": 1})])
        {'images': [{'id': 0, 'file_name': 'a.png'}], 'metadata': [{'image_id': 0, 'people': 1}]}
    """
    keys = COCO_ANNOTATION_KEYS
    return {
        keys.images: [
            {keys.images_id: i, keys.images_filename: filename}
            for i, (filename, _) in enumerate(custom_metadata)
        ],
        keys.custom_metadata: [
            {keys.custom_metadata_image_id: i, **metadata}
            for i, (_, metadata) in enumerate(custom_metadata)
        ],
    }


def save_custom_metadata(path: str, custom_metadata: list[tuple[str, Any]]) -> None:
    """Writes :func:`format_custom_metadata` of ``custom_metadata`` as JSON to ``path``."""
    with open(path, "w") as file:
        json.dump(format_custom_metadata(custom_metadata), file)


def save_tasks(path: str, tasks: list[str]) -> None:
    """Writes the names of prediction tasks as a JSON list to ``path``."""
    with open(path, "w") as file:
        json.dump(tasks, file)


def save_schema(path: str, task_type: str, ids: list[int], names: list[str]) -> None:
    """Writes a prediction schema as JSON to ``path``.

    Args:
        path: The JSON file to write.
        task_type: E.g. ``"classification"`` or ``"object-detection"``.
        ids: Category ids.
        names: Category names, one per id.

    Raises:
        ValueError: If ``ids`` and ``names`` differ in length.
    """
    if len(ids) != len(names):
        raise ValueError("ids and names must have same length!")
    schema = {
        "task_type": task_type,
        "categories": [{"id": id_, "name": name} for id_, name in zip(ids, names, strict=True)],
    }
    with open(path, "w") as file:
        json.dump(schema, file)
