"""Tests of fastssl.data.shards: plan, exactly-once content, determinism, resume, DALI index."""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastssl.data import shards
from fastssl.data.shards import ShardSettings, assign_shards, convert, parse_size


def index_image(index: int, size: tuple[int, int] = (8, 6)) -> Image.Image:
    """A small RGB image whose pixels spell ``index`` (R = low byte, G = high byte)."""
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[..., 0], array[..., 1], array[..., 2] = index % 256, index // 256, 77
    return Image.fromarray(array)


def read_index(image: Image.Image) -> int:
    r, g, _ = np.asarray(image.convert("RGB"))[0, 0]
    return int(r) + 256 * int(g)


def make_folder(root: Path, n: int, classes: int = 3, big_every: int = 0) -> Path:
    """``n`` PNGs under ``classes`` class folders; image i is in class i % classes.

    Every ``big_every``-th image is 40x30 instead of 8x6 (to exercise ``max_side``).
    """
    for i in range(n):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        size = (40, 30) if big_every and i % big_every == 0 else (8, 6)
        index_image(i, size).save(folder / f"img_{i:04d}.png")
    return root


def read_tars(dst: Path) -> list[dict[str, bytes]]:
    """All samples of all shards, in shard order, as {ext: bytes, "__key__": key}."""
    samples: list[dict[str, bytes]] = []
    for tar in sorted(dst.glob("shard-*.tar")):
        with tarfile.open(tar) as archive:
            for member in archive:
                key, ext = member.name.split(".", 1)
                if not samples or samples[-1]["__key__"] != key.encode():
                    samples.append({"__key__": key.encode()})
                handle = archive.extractfile(member)
                assert handle is not None
                samples[-1][ext] = handle.read()
    return samples


def snapshot(dst: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(dst.iterdir())}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1GB", 10**9), ("500MB", 5 * 10**8), ("1.5GB", 15 * 10**8), ("64KiB", 65536), ("1000", 1000)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["abc", "1XB", "-5MB", "0", ""])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=rf"max_size={text!r}"):
        parse_size(text)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_count": 0}, "max_count=0"),
        ({"quality": 101}, "quality=101"),
        ({"max_side": 0}, "max_side=0"),
        ({"format": "zip"}, "format='zip'"),
    ],
)
def test_settings_reject(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShardSettings(**kwargs)


def naive_assign(sizes: list[int], max_count: int, max_size: int) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for i, size in enumerate(sizes):
        fits = out and len(out[-1]) < max_count
        fits = fits and 1024 + sum(sizes[j] for j in out[-1]) + size <= max_size
        if fits:
            out[-1].append(i)
        else:
            out.append([i])
    return [(s[0], s[-1] + 1) for s in out]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assign_shards_matches_naive(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.randrange(1, 5000) for _ in range(200)]
    for max_count, max_size in [(7, 10**9), (1000, 20_000), (5, 9000), (3, 100)]:
        assert assign_shards(sizes, max_count, max_size) == naive_assign(sizes, max_count, max_size)


def test_every_image_lands_exactly_once_with_label_and_metadata(tmp_path: Path) -> None:
    n = 53
    src = make_folder(tmp_path / "src", n)
    dst = tmp_path / "dst"
    manifest = convert(src, dst, ShardSettings(max_count=10, seed=3), workers=2)
    samples = read_tars(dst)
    assert manifest["num_samples"] == n == len(samples)
    assert [s["num_samples"] for s in manifest["shards"]] == [10, 10, 10, 10, 10, 3]
    assert manifest["classes"] == ["class_0", "class_1", "class_2"]
    seen = []
    for position, sample in enumerate(samples):
        assert sample["__key__"] == f"{position:09d}".encode()
        index = read_index(Image.open(io.BytesIO(sample["png"])))
        meta = json.loads(sample["json"])
        assert meta == {
            "class": f"class_{index % 3}",
            "path": f"class_{index % 3}/img_{index:04d}.png",
            "width": 8,
            "height": 6,
        }
        assert int(sample["cls"].decode("ascii")) == index % 3
        # Copy mode: the member is the source file's bytes.
        assert sample["png"] == (src / meta["path"]).read_bytes()
        seen.append(index)
    assert sorted(seen) == list(range(n))
    # Seeded shuffle: not the sorted order, and the first shard mixes classes.
    assert seen != sorted(seen)
    assert len({i % 3 for i in seen[:10]}) == 3
    # Shard checksums and sizes in the manifest are those of the files.
    for entry in manifest["shards"]:
        data = (dst / entry["file"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == shards.hashlib.sha256(data).hexdigest()
    assert json.loads((dst / "manifest.json").read_text()) == manifest
    assert not list(dst.glob("*.tmp")) and not (dst / ".plan.json").exists()


def test_tar_metadata_is_fixed(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", 5)
    convert(src, tmp_path / "dst", ShardSettings(), workers=1)
    with tarfile.open(tmp_path / "dst" / "shard-000000.tar") as archive:
        for member in archive:
            assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
                0,
                0,
                0,
                "",
                "",
            )
            assert member.mode == 0o644 and member.isfile()


@pytest.mark.parametrize("max_side", [None, 16])
def test_reruns_are_byte_identical_whatever_the_workers(
    tmp_path: Path, max_side: int | None
) -> None:
    src = make_folder(tmp_path / "src", 30, big_every=4)
    settings = ShardSettings(max_count=7, max_side=max_side, seed=5)
    convert(src, tmp_path / "a", settings, workers=1)
    convert(src, tmp_path / "b", settings, workers=2)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    other = convert(src, tmp_path / "c", ShardSettings(max_count=7, max_side=max_side, seed=6))
    assert snapshot(tmp_path / "a") != snapshot(tmp_path / "c")
    assert other["num_samples"] == 30


def test_max_side_reencodes_only_large_images(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", 12, big_every=3)
    convert(src, tmp_path / "dst", ShardSettings(max_side=20), workers=1)
    for sample in read_tars(tmp_path / "dst"):
        meta = json.loads(sample["json"])
        if meta["width"] == 40:
            image = Image.open(io.BytesIO(sample["jpg"]))
            assert image.format == "JPEG" and image.size == (20, 15)
            assert abs(read_index(image) - int(meta["path"][-8:-4]) % 256) <= 3  # lossy
        else:
            assert sample["png"] == (src / meta["path"]).read_bytes()


def test_max_size_bounds_every_shard(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", 40)
    manifest = convert(src, tmp_path / "dst", ShardSettings(max_size=parse_size("8KB")))
    assert len(manifest["shards"]) > 3
    assert all(entry["bytes"] <= 8000 for entry in manifest["shards"])
    assert sum(entry["num_samples"] for entry in manifest["shards"]) == 40


def plant_bad_files(src: Path) -> dict[str, str]:
    """Bad files in class_0 -> a fragment of the reason each must be skipped with."""
    folder = src / "class_0"
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        good, format="JPEG"
    )
    (folder / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    corrupt = bytearray((folder / "img_0000.png").read_bytes())
    corrupt[60:80] = b"\x00" * 20  # inside the compressed data: the PNG CRC fails
    (folder / "corrupt.png").write_bytes(bytes(corrupt))
    return {
        "class_0/truncated.jpg": "truncated",
        "class_0/empty.jpg": "empty file",
        "class_0/text.jpg": "not an image",
        "class_0/corrupt.png": "not a decodable image",
    }


def test_bad_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", 9)
    expected = plant_bad_files(src)
    (src / "stray.png").write_bytes((src / "class_0" / "img_0000.png").read_bytes())
    expected["stray.png"] = "outside any class folder"
    manifest = convert(src, tmp_path / "dst", ShardSettings(), workers=2)
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == set(expected)
    for path, fragment in expected.items():
        assert fragment in skipped[path], (path, skipped[path])
    assert "0x" not in json.dumps(manifest["skipped"])  # no memory addresses
    assert manifest["num_samples"] == 9
    assert sorted(
        read_index(Image.open(io.BytesIO(s["png"]))) for s in read_tars(tmp_path / "dst")
    ) == list(range(9))


def test_dali_index_matches_wds2idx(tmp_path: Path) -> None:
    wds2idx = pytest.importorskip("wds2idx")
    src = make_folder(tmp_path / "src", 25, big_every=5)
    convert(src, tmp_path / "dst", ShardSettings(max_count=10, max_side=16))
    for tar in sorted((tmp_path / "dst").glob("*.tar")):
        oracle = tmp_path / (tar.stem + ".oracle.idx")
        with wds2idx.IndexCreator(str(tar), str(oracle), verbose=False) as creator:
            creator.create_index()
        assert tar.with_suffix(".idx").read_text() == oracle.read_text()


@pytest.mark.dali
def test_dali_reads_the_shards_with_their_index(tmp_path: Path) -> None:
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def

    n = 17
    src = make_folder(tmp_path / "src", n)
    manifest = convert(src, tmp_path / "dst", ShardSettings(max_count=5), workers=1)
    dst = tmp_path / "dst"
    tars = [str(dst / s["file"]) for s in manifest["shards"]]
    idxs = [str(dst / s["index"]) for s in manifest["shards"]]

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():  # type: ignore[no-untyped-def]
        image, cls = fn.readers.webdataset(
            paths=tars, index_paths=idxs, ext=["png", "cls"], random_shuffle=False, name="r"
        )
        return fn.decoders.image(image, device="cpu"), cls

    pipeline = pipe()
    pipeline.build()
    seen = []
    for _ in range(n):
        image, cls = pipeline.run()
        array = np.asarray(image.as_array()[0])
        index = int(array[0, 0, 0]) + 256 * int(array[0, 0, 1])
        assert int(bytes(np.asarray(cls.as_array()[0])).decode()) == index % 3
        seen.append(index)
    assert sorted(seen) == list(range(n))


def test_resume_keeps_good_shards_and_rewrites_the_rest(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", 40, big_every=3)
    settings = ShardSettings(max_count=6, max_side=16, seed=1)
    convert(src, tmp_path / "ref", settings, workers=1)
    reference = snapshot(tmp_path / "ref")
    # What a run killed mid-way leaves: the plan, some shards, a damaged one, tmp files.
    dst = tmp_path / "dst"
    dst.mkdir()
    plan = shards.make_plan(src, settings, workers=1)
    (dst / ".plan.json").write_bytes(shards._dump(plan.to_json()))
    for name in ["shard-000000.tar", "shard-000000.idx", "shard-000001.tar", "shard-000003.tar"]:
        (dst / name).write_bytes(reference[name])
    damaged = bytearray(reference["shard-000003.tar"])
    damaged[2000] ^= 0xFF
    (dst / "shard-000003.tar").write_bytes(bytes(damaged))
    (dst / "shard-000004.tar.tmp").write_bytes(reference["shard-000004.tar"][:1000])
    (dst / "shard-000099.tar").write_bytes(b"stale")
    kept_inode = os.stat(dst / "shard-000000.tar").st_ino
    convert(src, dst, settings, workers=2)
    assert snapshot(dst) == reference
    assert os.stat(dst / "shard-000000.tar").st_ino == kept_inode  # verified and kept
    # Rerunning a finished conversion checks it and changes nothing.
    convert(src, dst, settings, workers=1)
    assert snapshot(dst) == reference


def test_dst_with_another_plan_is_refused(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", 6)
    convert(src, tmp_path / "dst", ShardSettings(max_count=4))
    with pytest.raises(ValueError, match=r"different plan \(max_count: 4 there, 5 now\)"):
        convert(src, tmp_path / "dst", ShardSettings(max_count=5))
    index_image(99).save(src / "class_1" / "new.png")
    with pytest.raises(ValueError, match="the files in SRC differ"):
        convert(src, tmp_path / "dst", ShardSettings(max_count=4))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"did not write \(notes.txt\)"):
        convert(src, tmp_path / "other", ShardSettings())


def test_finished_shard_corruption_is_reported_by_name(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", 6)
    convert(src, tmp_path / "dst", ShardSettings(max_count=4))
    path = tmp_path / "dst" / "shard-000001.tar"
    data = bytearray(path.read_bytes())
    data[700] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"shard-000001\.tar: sha256"):
        convert(src, tmp_path / "dst", ShardSettings(max_count=4))


@pytest.mark.parametrize(
    ("setup", "match"),
    [("missing", "does not exist"), ("file", "is not a folder"), ("empty", "holds no files")],
)
def test_bad_src(tmp_path: Path, setup: str, match: str) -> None:
    src = tmp_path / "src"
    if setup == "file":
        src.write_text("x")
    elif setup == "empty":
        src.mkdir()
    with pytest.raises(ValueError, match=rf"SRC '{src}' {match}"):
        convert(src, tmp_path / "dst")


# ---------------------------------------------------------------------------------------
# Odd files and names, a second writer (issue 32, item 4)
# ---------------------------------------------------------------------------------------


def plant_odd_entries(src: Path, outside: Path) -> tuple[dict[str, str], set[str]]:
    """Links and special files in class_1.

    Returns the entries that must be skipped (path -> fragment of the reason) and the
    paths that must become samples.
    """
    folder = src / "class_1"
    (folder / "dangling.png").symlink_to(src / "nowhere.png")
    (folder / "self_loop.png").symlink_to(folder / "self_loop.png")
    (folder / "sub").mkdir()
    index_image(500).save(folder / "sub" / "deep.png")
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    os.mkfifo(folder / "fifo.png")
    outside.mkdir()
    index_image(501).save(outside / "linked_dir_image.png")
    (folder / "linked_dir").symlink_to(outside, target_is_directory=True)
    (folder / "linked_file.png").symlink_to(folder / "img_0001.png")
    skipped = {
        "class_1/dangling.png": "dangling symbolic link",
        "class_1/self_loop.png": "symbolic link loop",
        "class_1/sub/loop": "symbolic link loop",
        "class_1/fifo.png": "not a regular file (FIFO)",
    }
    samples = {
        "class_1/sub/deep.png",
        "class_1/linked_dir/linked_dir_image.png",
        "class_1/linked_file.png",
    }
    return skipped, samples


@pytest.mark.parametrize("workers", [1, 2])
def test_every_file_found_is_a_sample_or_skipped(tmp_path: Path, workers: int) -> None:
    src = make_folder(tmp_path / "src", 6)
    skipped, extra = plant_odd_entries(src, tmp_path / "outside")
    manifest = convert(src, tmp_path / "dst", ShardSettings(), workers=workers)
    reasons = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == set(skipped)
    for path, fragment in skipped.items():
        assert fragment in reasons[path], (path, reasons[path])
    paths = {json.loads(s["json"])["path"] for s in read_tars(tmp_path / "dst")}
    regular = {f"class_{i % 3}/img_{i:04d}.png" for i in range(6)}
    assert paths == regular | extra
    assert manifest["source"]["num_files"] == len(paths)


ODD_NAMES = [
    pytest.param(b"caf\xe9 \xff.png", id="not-utf8"),
    pytest.param(b"new\nline \\ tab\t.png", id="control-chars"),
    pytest.param("ünïcödé 文字.png".encode(), id="unicode"),
]


def assert_strict_json(data: bytes) -> object:
    """Parses ``data`` as JSON that strict parsers accept: UTF-8, no lone surrogates."""
    text = data.decode("utf-8")
    parsed = json.loads(text)

    def walk(value: object) -> None:
        if isinstance(value, str):
            value.encode("utf-8")  # raises on a lone surrogate
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(k)
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(parsed)
    return parsed


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_file_names_become_samples_with_their_name_recorded(
    tmp_path: Path, name: bytes
) -> None:
    src = make_folder(tmp_path / "src", 4)
    folder = os.fsencode(src / "class_2")
    image_path = os.path.join(folder, name)
    with open(image_path, "wb") as handle:
        index_image(300).save(handle, format="PNG")
    with open(os.path.join(folder, b"broken " + name), "wb") as handle:
        handle.write(b"not an image")
    manifest = convert(src, tmp_path / "dst", ShardSettings(max_side=4), workers=2)
    assert_strict_json((tmp_path / "dst" / "manifest.json").read_bytes())
    assert manifest["num_samples"] == 5
    raw = b"class_2/" + name
    shown = raw.decode("utf-8", "backslashreplace")
    [skip] = manifest["skipped"]
    assert skip["path"] == "class_2/broken " + name.decode("utf-8", "backslashreplace")
    [meta] = [
        meta
        for s in read_tars(tmp_path / "dst")
        if (meta := assert_strict_json(s["json"]))["path"] == shown  # type: ignore[index]
    ]
    assert isinstance(meta, dict)
    if shown.encode() == raw:  # a UTF-8 name is recorded as it is
        assert "path_bytes" not in meta
    else:  # the original bytes, to find the file again
        assert bytes.fromhex(meta["path_bytes"]) == raw
    # A rerun finds the same files and keeps the finished output.
    assert convert(src, tmp_path / "dst", ShardSettings(max_side=4), workers=1) == manifest


def hold_lock(dst: Path) -> int:
    """Locks ``dst/.lock`` as a running conversion would; returns the descriptor."""
    import fcntl

    dst.mkdir(exist_ok=True)
    fd = os.open(dst / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242\n")
    return fd


def test_a_second_writer_is_refused_and_the_lock_released(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", 5)
    dst = tmp_path / "dst"
    fd = hold_lock(dst)
    try:
        with pytest.raises(shards.DstLockedError, match=r"being written by another .*pid 4242"):
            convert(src, dst, ShardSettings(), workers=1)
    finally:
        os.close(fd)
    assert sorted(p.name for p in dst.iterdir()) == [".lock"]  # nothing touched
    # A lock file whose holder is gone (killed) is not a lock: the run goes ahead.
    manifest = convert(src, dst, ShardSettings(), workers=1)
    assert manifest["num_samples"] == 5
    assert not (dst / ".lock").exists()  # released and removed on exit


def test_two_concurrent_runs_never_crash(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = make_folder(tmp_path / "src", 60)
    dst = tmp_path / "dst"
    command = [sys.executable, "-m", "fastssl", "shards", str(src), str(dst), "--quiet"]
    command += ["--max-count", "7", "--workers", "1"]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]  # type: ignore[union-attr]
    for code, err in results:
        assert "Traceback" not in err, err
        assert code == 0 or (code == 2 and "being written by another" in err), err
    assert any(code == 0 for code, _ in results)
    convert(src, dst, ShardSettings(max_count=7))  # finished and verified
    assert sum(1 for _ in dst.glob("shard-*.tar")) == 9


# ---------------------------------------------------------------------------------------
# Images kept as they look (issue 32, item 5)
# ---------------------------------------------------------------------------------------


def read_through_source(dst: Path) -> dict[str, tuple[np.ndarray, dict]]:
    """Every sample as the shard reader delivers it: source path -> (RGB array, metadata)."""
    from fastssl.data.webdataset_source import WebDatasetSource

    metas = {s["__key__"].decode(): json.loads(s["json"]) for s in read_tars(dst)}
    out = {}
    for image, _, sample_key in WebDatasetSource(dst, shuffle=False):
        out[metas[sample_key]["path"]] = (np.asarray(image), metas[sample_key])
    return out


@pytest.mark.parametrize("max_side", [None, 16])
def test_exif_rotated_photo_is_stored_upright(tmp_path: Path, max_side: int | None) -> None:
    from tests.data.test_images import quadrant_colours, rotated_jpeg, upright

    src = make_folder(tmp_path / "src", 3)
    (src / "class_0" / "photo.jpg").write_bytes(rotated_jpeg(6, 40, 20))
    convert(src, tmp_path / "dst", ShardSettings(max_side=max_side), workers=1)
    array, meta = read_through_source(tmp_path / "dst")["class_0/photo.jpg"]
    assert (meta["width"], meta["height"]) == (20, 40)  # as a viewer shows it
    assert array.shape[:2] == ((40, 20) if max_side is None else (16, 8))
    assert quadrant_colours(array) == quadrant_colours(upright(6, 40, 20))


@pytest.mark.parametrize("max_side", [None, 16])
def test_16bit_png_is_scaled_not_clipped(tmp_path: Path, max_side: int | None) -> None:
    from tests.data.test_images import GRADIENT, png16

    src = make_folder(tmp_path / "src", 3)
    (src / "class_0" / "depth.png").write_bytes(png16(GRADIENT))
    convert(src, tmp_path / "dst", ShardSettings(max_side=max_side), workers=1)
    array, _ = read_through_source(tmp_path / "dst")["class_0/depth.png"]
    expected = GRADIENT >> 8
    if max_side is None:  # the original bytes, scaled by the reader
        np.testing.assert_array_equal(array[..., 0], expected)
    else:  # scaled, shrunk and JPEG-encoded by the writer
        assert array.shape[:2] == (16, 16)
        small = np.asarray(Image.fromarray(expected.astype(np.uint8)).resize((16, 16)))
        assert np.abs(array[..., 0].astype(int) - small).max() <= 12
    assert (array == 255).mean() < 0.01


def test_formats_not_every_engine_decodes_are_stored_as_png(tmp_path: Path) -> None:
    # TGA: no reader lists it; GIF: DALI's decoder cannot read it (its webdataset reader
    # then finds a sample without an image and stops the run).
    src = make_folder(tmp_path / "src", 3)
    index_image(321).save(src / "class_0" / "odd.tga", format="TGA")
    index_image(322).save(src / "class_0" / "anim.gif", format="GIF")
    convert(src, tmp_path / "dst", ShardSettings(), workers=1)
    members = {
        json.loads(s["json"])["path"]: sorted(k for k in s if k not in ("__key__", "json", "cls"))
        for s in read_tars(tmp_path / "dst")
    }
    assert members["class_0/odd.tga"] == ["png"]
    assert members["class_0/anim.gif"] == ["png"]
    seen = read_through_source(tmp_path / "dst")
    assert read_index(Image.fromarray(seen["class_0/odd.tga"][0])) == 321
