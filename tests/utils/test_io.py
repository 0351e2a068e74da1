from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lightly.utils import io as lightly_io

from fastssl.utils import io


def _data(n: int, d: int, dtype: type = np.float32) -> tuple[np.ndarray, list[int], list[str]]:
    rng = np.random.default_rng(n * 10 + d)
    embeddings = rng.normal(size=(n, d)).astype(dtype)
    return embeddings, [int(x) for x in rng.integers(0, 5, n)], [f"img_{i}.png" for i in range(n)]


@pytest.mark.parametrize(("n", "d"), [(1, 1), (4, 3), (7, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_embeddings_writes_lightlys_file(tmp_path: Path, n: int, d: int, dtype: type) -> None:
    embeddings, labels, filenames = _data(n, d, dtype)
    io.save_embeddings(str(tmp_path / "ours.csv"), embeddings, labels, filenames)
    lightly_io.save_embeddings(str(tmp_path / "theirs.csv"), embeddings, labels, filenames)
    ours = (tmp_path / "ours.csv").read_bytes()
    assert ours == (tmp_path / "theirs.csv").read_bytes()
    assert ours.splitlines()[0].decode() == ",".join(
        ["filenames", *(f"embedding_{i}" for i in range(d)), "labels"]
    )


@pytest.mark.parametrize(("n", "d"), [(1, 1), (4, 3), (7, 16)])
def test_load_embeddings_matches_lightly(tmp_path: Path, n: int, d: int) -> None:
    embeddings, labels, filenames = _data(n, d)
    path = str(tmp_path / "e.csv")
    lightly_io.save_embeddings(path, embeddings, labels, filenames)
    ours = io.load_embeddings(path)
    theirs = lightly_io.load_embeddings(path)
    assert ours[0].dtype == theirs[0].dtype == np.float64
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[0].astype(np.float32), embeddings)
    assert ours[1:] == theirs[1:] == (labels, filenames)


@pytest.mark.parametrize("return_all", [False, True])
def test_load_embeddings_as_dict_matches_lightly(tmp_path: Path, return_all: bool) -> None:
    path = str(tmp_path / "e.csv")
    io.save_embeddings(path, *_data(3, 2))
    ours = io.load_embeddings_as_dict(path, "mine", return_all=return_all)
    theirs = lightly_io.load_embeddings_as_dict(path, "mine", return_all=return_all)
    if return_all:
        assert isinstance(ours, tuple) and len(ours) == len(theirs) == 4
        np.testing.assert_array_equal(ours[1], theirs[1])
        assert ours[2:] == theirs[2:]
        ours, theirs = ours[0], theirs[0]
    assert ours == theirs
    assert ours["embeddingName"] == "mine" and len(ours["embeddings"]) == 3
    assert set(ours["embeddings"][0]) == {"fileName", "value", "label"}


def test_save_embeddings_length_mismatch_raises(tmp_path: Path) -> None:
    embeddings, labels, filenames = _data(3, 2)
    with pytest.raises(ValueError, match="should be equal"):
        io.save_embeddings(str(tmp_path / "e.csv"), embeddings, labels[:2], filenames)


BAD_HEADERS = [
    ("filenames, embedding_0,labels", "whitespace"),
    ("names,embedding_0,labels", "must start with `filenames`"),
    ("filenames,embedding_0,label", "no `labels` column"),
    ("filenames,embedding_0,other,labels", "must have `embedding_x` columns but found other"),
]


@pytest.mark.parametrize(("header", "message"), BAD_HEADERS)
def test_check_embeddings_rejects_bad_headers(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "e.csv"
    path.write_text(f"{header}\na.png,1.0,0\n")
    with pytest.raises(RuntimeError, match=message):
        io.check_embeddings(str(path))
    with pytest.raises(RuntimeError):
        lightly_io.check_embeddings(str(path))


def test_check_embeddings_rejects_empty_rows(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("filenames,embedding_0,labels\na.png,1.0,0\n\nb.png,2.0,1\n")
    with pytest.raises(RuntimeError, match="empty row on line 1"):
        io.check_embeddings(str(path))
    with pytest.raises(RuntimeError, match="empty row on line 1"):
        lightly_io.check_embeddings(str(path))


def test_check_embeddings_accepts_special_columns(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("filenames,embedding_0,masked,selected,labels\na.png,1.0,0,1,0\n")
    io.check_embeddings(str(path))


def test_check_embeddings_removes_additional_columns_like_lightly(tmp_path: Path) -> None:
    content = (
        "filenames,embedding_0,masked,embedding_1,labels,extra\n"
        "a.png,1.0,0,2.0,3,x\n"
        "b.png,4.0,1,5.0,6,y\n"
    )
    ours, theirs = tmp_path / "ours.csv", tmp_path / "theirs.csv"
    ours.write_text(content)
    theirs.write_text(content)
    io.check_embeddings(str(ours), remove_additional_columns=True)
    lightly_io.check_embeddings(str(theirs), remove_additional_columns=True)
    assert ours.read_bytes() == theirs.read_bytes()
    assert ours.read_text().splitlines()[0] == "filenames,embedding_0,embedding_1,labels"


METADATA = [
    ("hello.png", {"number_of_people": 1}),
    ("world.png", {"number_of_people": 3, "x": "y"}),
]


def test_format_custom_metadata_matches_lightly() -> None:
    ours = io.format_custom_metadata(METADATA)
    assert ours == lightly_io.format_custom_metadata(METADATA)
    assert ours["images"][1] == {"id": 1, "file_name": "world.png"}
    assert ours["metadata"][1] == {"image_id": 1, "number_of_people": 3, "x": "y"}


def test_coco_annotation_keys_match_lightly() -> None:
    names = [n for n in vars(lightly_io.COCO_ANNOTATION_KEYS) if not n.startswith("_")]
    assert names
    for name in names:
        assert getattr(io.COCO_ANNOTATION_KEYS, name) == getattr(
            lightly_io.COCO_ANNOTATION_KEYS, name
        )


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("save_custom_metadata", (METADATA,)),
        ("save_tasks", (["task_a", "task_b"],)),
        ("save_schema", ("object-detection", [0, 5], ["cat", "dog"])),
    ],
)
def test_json_files_match_lightly(tmp_path: Path, function: str, args: tuple) -> None:
    getattr(io, function)(str(tmp_path / "ours.json"), *args)
    getattr(lightly_io, function)(str(tmp_path / "theirs.json"), *args)
    ours = json.loads((tmp_path / "ours.json").read_text())
    assert ours == json.loads((tmp_path / "theirs.json").read_text())
    if function == "save_schema":
        assert ours["categories"] == [{"id": 0, "name": "cat"}, {"id": 5, "name": "dog"}]


def test_save_schema_length_mismatch_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="same length"):
        io.save_schema(str(tmp_path / "s.json"), "classification", [0, 1], ["a"])
