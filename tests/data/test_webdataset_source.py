"""Tests of WebDatasetSource: exactly once per epoch across ranks x workers, resume, safety."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from fastssl.data.shards import ShardSettings, convert
from fastssl.data.webdataset_source import (
    CorruptShardError,
    ManifestError,
    ShardChecksumError,
    UnsafeShardError,
    WebDatasetSource,
)
from tests._distributed import run_distributed
from tests.data.test_shards import make_folder, read_index

N = 47  # does not divide by 2 ranks x 2 workers, nor by the shard size


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wds")
    convert(make_folder(root / "src", N), root / "dst", ShardSettings(max_count=6), workers=1)
    return root / "dst"


def _collate(batch: list) -> list:
    return batch


def _epoch(root: Path, rank: int, world: int, workers: int, epoch: int, **kwargs) -> list:
    source = WebDatasetSource(root, rank=rank, world_size=world, shuffle_buffer=8, **kwargs)
    source.set_epoch(epoch)
    loader = DataLoader(source, batch_size=5, num_workers=workers, collate_fn=_collate)
    out = [(read_index(image), target, key) for batch in loader for image, target, key in batch]
    assert len(out) == len(source)
    return out


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 2), (3, 1)])
def test_every_sample_exactly_once_per_epoch(shards_dir: Path, world: int, workers: int) -> None:
    for epoch in (0, 1):
        delivered = []
        for rank in range(world):
            delivered += _epoch(shards_dir, rank, world, workers, epoch)
        assert sorted(index for index, _, _ in delivered) == list(range(N))
        assert all(target == index % 3 for index, target, _ in delivered)


def test_order_is_seeded_per_epoch(shards_dir: Path) -> None:
    first = [i for i, _, _ in _epoch(shards_dir, 0, 1, 0, epoch=0)]
    assert first == [i for i, _, _ in _epoch(shards_dir, 0, 1, 0, epoch=0)]
    assert first != [i for i, _, _ in _epoch(shards_dir, 0, 1, 0, epoch=1)]
    assert first != [i for i, _, _ in _epoch(shards_dir, 0, 1, 0, epoch=0, seed=9)]
    plain = _epoch(shards_dir, 0, 1, 0, epoch=0, shuffle=False)
    assert [key for _, _, key in plain] == [f"{i:09d}" for i in range(N)]


def test_drop_last_gives_equal_counts_and_drops_the_remainder(shards_dir: Path) -> None:
    per_rank = [_epoch(shards_dir, r, 2, 2, 0, drop_last=True) for r in range(2)]
    assert [len(p) for p in per_rank] == [N // 2, N // 2]
    indices = [i for p in per_rank for i, _, _ in p]
    assert len(set(indices)) == len(indices) == N - N % 2


def test_resume_in_process_skips_what_was_delivered(shards_dir: Path) -> None:
    full = _epoch(shards_dir, 0, 1, 0, epoch=3)
    source = WebDatasetSource(shards_dir, shuffle_buffer=8)
    source.set_epoch(3)
    iterator = iter(source)
    head = [next(iterator)[2] for _ in range(11)]
    state = source.state_dict()
    assert state["delivered"] == [11] and state["epoch"] == 3
    resumed = WebDatasetSource(shards_dir, shuffle_buffer=8)
    resumed.load_state_dict(state)
    tail = [key for _, _, key in resumed]
    assert head + tail == [key for _, _, key in full]


def test_resume_with_workers_from_delivered_keys(shards_dir: Path) -> None:
    kwargs = {"rank": 1, "world_size": 2, "shuffle_buffer": 4}
    full = Counter(key for _, _, key in _epoch(shards_dir, 1, 2, 2, 2, seed=0, **{"shuffle": True}))
    source = WebDatasetSource(shards_dir, **kwargs)
    source.set_epoch(2)
    loader = DataLoader(source, batch_size=3, num_workers=2, collate_fn=_collate)
    head: list[str] = []
    for step, batch in enumerate(loader):
        keys = [key for _, _, key in batch]
        source.mark_delivered(keys, num_workers=2)
        head += keys
        if step == 2:
            break
    state = source.state_dict()
    resumed = WebDatasetSource(shards_dir, **kwargs)
    resumed.load_state_dict(state)
    loader = DataLoader(resumed, batch_size=3, num_workers=2, collate_fn=_collate)
    tail = [key for batch in loader for _, _, key in batch]
    assert Counter(head + tail) == full
    with pytest.raises(
        ValueError, match="num_workers=2 but runs in a DataLoader with num_workers=1"
    ):
        next(iter(resumed))


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w") as archive:
        good = tarfile.TarInfo("000000000.cls")
        good.size = 1
        archive.addfile(good, io.BytesIO(b"0"))
        archive.addfile(member, io.BytesIO(data) if data else None)


def _member(name: str, kind: bytes, link: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (_member("/etc/000001.jpg", tarfile.REGTYPE, size=1), "has an absolute path"),
        (_member("../000001.jpg", tarfile.REGTYPE, size=1), "has a '..' path component"),
        (_member("000001.jpg", tarfile.SYMTYPE, link="/etc/passwd"), "is a link"),
        (_member("000001.jpg", tarfile.LNKTYPE, link="000000000.cls"), "is a link"),
        (_member("000001.jpg", tarfile.CHRTYPE), "is a device or FIFO"),
        (_member("000001.jpg", tarfile.FIFOTYPE), "is a device or FIFO"),
    ],
)
def test_unsafe_members_are_refused(tmp_path: Path, member: tarfile.TarInfo, problem: str) -> None:
    shard = tmp_path / "shard-000000.tar"
    _tar_with(shard, member, b"x" if member.size else b"")
    manifest = {
        "format": "webdataset",
        "classes": ["a"],
        "shards": [{"file": shard.name, "num_samples": 2, "sha256": "unused"}],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    source = WebDatasetSource(tmp_path, verify=False, shuffle=False)
    with pytest.raises(
        UnsafeShardError, match=rf"shard .*shard-000000\.tar: member '{member.name}' {problem}"
    ):
        list(source)


def test_checksum_mismatch_names_the_shard(tmp_path: Path) -> None:
    convert(make_folder(tmp_path / "src", 8), tmp_path / "dst", ShardSettings(max_count=4))
    path = tmp_path / "dst" / "shard-000001.tar"
    data = bytearray(path.read_bytes())
    data[600] ^= 1  # inside the first image: the tar still parses
    path.write_bytes(bytes(data))
    with pytest.raises(ShardChecksumError, match=r"shard-000001\.tar: sha256 .* does not match"):
        list(WebDatasetSource(tmp_path / "dst", shuffle=False))
    assert len(list(WebDatasetSource(tmp_path / "dst", shuffle=False, verify=False))) == 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"rank": 2, "world_size": 2}, "rank=2 and world_size=2"), ({"shuffle_buffer": -1}, "-1")],
)
def test_bad_arguments(shards_dir: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WebDatasetSource(shards_dir, **kwargs)
    with pytest.raises(FileNotFoundError, match=r"neither a manifest\.json .* nor \.tar files"):
        WebDatasetSource(shards_dir.parent)


def _rank_keys(root: str) -> list[tuple[int, int]]:
    source = WebDatasetSource(root, shuffle_buffer=8)  # rank and world size from dist
    loader = DataLoader(source, batch_size=4, num_workers=0, collate_fn=_collate)
    return [(read_index(image), target) for batch in loader for image, target, _ in batch]


@pytest.mark.dist
def test_two_real_ranks_split_the_epoch(shards_dir: Path) -> None:
    per_rank = run_distributed(_rank_keys, 2, str(shards_dir))
    assert [len(r) for r in per_rank] == [N // 2, N - N // 2]
    assert sorted(i for r in per_rank for i, _ in r) == list(range(N))


# ---------------------------------------------------------------------------------------
# Crafted and corrupt shards (issue 32, item 6)
# ---------------------------------------------------------------------------------------


def _copy_shards(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _rewrite_member(shard: Path, member_name: str, data: bytes) -> None:
    """Replaces one member's bytes, keeping the tar valid (the manifest sha256 is then off)."""
    with tarfile.open(shard) as archive:
        members = [(m, archive.extractfile(m).read()) for m in archive]  # type: ignore[union-attr]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as archive:
        for member, payload in members:
            if member.name == member_name:
                payload = data
            member.size = len(payload)
            archive.addfile(member, io.BytesIO(payload))


def _first_member(shard: Path, ext: str) -> str:
    with tarfile.open(shard) as archive:
        return next(m.name for m in archive if m.name.endswith(f".{ext}"))


@pytest.fixture
def corrupt_image(shards_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The shards with one image member (shard 1, its first) replaced by broken bytes."""
    root = _copy_shards(shards_dir, tmp_path / "corrupt")
    shard = root / "shard-000001.tar"
    name = _first_member(shard, "png")
    with tarfile.open(shard) as archive:
        good = archive.extractfile(name).read()  # type: ignore[union-attr]
    broken = {"garbage": b"not an image at all", "truncated": good[: len(good) // 2]}
    _rewrite_member(shard, name, broken[request.param])
    return root


def _lazy_transform() -> object:
    from fastssl.data.engines.batched import ViewDecoder
    from fastssl.transforms.view_spec import ViewSpec

    return ViewDecoder([ViewSpec(crop_size=4)])


@pytest.mark.parametrize("corrupt_image", ["garbage", "truncated"], indirect=True)
@pytest.mark.parametrize("lazy", [False, True])
def test_corrupt_image_is_replaced_warned_and_counted(corrupt_image: Path, lazy: bool) -> None:
    transform = _lazy_transform() if lazy else None
    source = WebDatasetSource(corrupt_image, transform=transform, verify=False, shuffle=False)
    with pytest.warns(UserWarning, match=r"shard-000001\.tar: member '000000006\.png'") as caught:
        out = list(source)
    assert len(out) == N == len(source)  # every rank still runs the same number of steps
    keys = [key for _, _, key in out]
    assert "000000006" not in keys and keys.count("000000005") == 2  # the previous sample
    assert source.num_skipped == 1
    assert sum("member '000000006.png'" in str(w.message) for w in caught) == 1
    strict = WebDatasetSource(
        corrupt_image, transform=transform, verify=False, shuffle=False, strict=True
    )
    with pytest.raises(CorruptShardError, match=r"shard-000001\.tar: member '000000006\.png'"):
        list(strict)


@pytest.mark.parametrize("corrupt_image", ["garbage"], indirect=True)
def test_make_loader_passes_strict_to_the_shards(corrupt_image: Path) -> None:
    from fastssl.data.loader import make_loader

    def transform(image: object) -> object:
        import torch

        return [torch.zeros(3, 2, 2)]

    loader = make_loader(
        corrupt_image, transform, backend="torch", batch_size=8, num_workers=0, strict=True
    )
    loader.dataset.verify = False  # type: ignore[union-attr]
    with pytest.raises(CorruptShardError, match=r"member '000000006\.png'"):
        list(loader)


def test_corrupt_first_sample_of_a_worker_is_replaced_by_the_next(
    shards_dir: Path, tmp_path: Path
) -> None:
    root = _copy_shards(shards_dir, tmp_path / "first")
    _rewrite_member(root / "shard-000000.tar", "000000000.png", b"broken")
    with pytest.warns(UserWarning, match="000000000.png"):
        keys = [key for _, _, key in WebDatasetSource(root, verify=False, shuffle=False)]
    assert len(keys) == N and keys[:2] == ["000000001", "000000001"]


def _craft_member(root: Path, ext: str, payload: bytes) -> None:
    shard = root / "shard-000001.tar"
    _rewrite_member(shard, _first_member(shard, ext), payload)


@pytest.mark.parametrize(
    ("ext", "payload", "problem"),
    [
        ("cls", b"seven", r"member '000000006\.cls' holds b'seven', not a class index"),
        ("cls", b"99", r"member '000000006\.cls' holds class 99, but the manifest lists 3"),
        ("png", None, r"sample '000000006' has no image member"),
    ],
)
def test_bad_sample_members_are_named(
    shards_dir: Path, tmp_path: Path, ext: str, payload: bytes | None, problem: str
) -> None:
    root = _copy_shards(shards_dir, tmp_path / "crafted")
    if payload is None:  # rename the image member away
        shard = root / "shard-000001.tar"
        with tarfile.open(shard) as archive:
            members = [(m, archive.extractfile(m).read()) for m in archive]  # type: ignore[union-attr]
        with tarfile.open(shard, "w") as archive:
            for member, data in members:
                if member.name == "000000006.png":
                    member.name = "000000006.txt"
                archive.addfile(member, io.BytesIO(data))
    else:
        _craft_member(root, ext, payload)
    strict = WebDatasetSource(root, verify=False, shuffle=False, strict=True)
    with pytest.raises(CorruptShardError, match=rf"shard .*shard-000001\.tar: {problem}"):
        list(strict)
    with pytest.warns(UserWarning, match=problem):
        assert len(list(WebDatasetSource(root, verify=False, shuffle=False))) == N


def test_huge_declared_member_size_is_refused(shards_dir: Path, tmp_path: Path) -> None:
    root = _copy_shards(shards_dir, tmp_path / "huge")
    shard = root / "shard-000001.tar"
    info = tarfile.TarInfo("000000006.png")
    info.size = 1 << 40  # a terabyte, declared; 1 KiB follows
    shard.write_bytes(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024))
    source = WebDatasetSource(root, verify=False, shuffle=False)
    declared = r"shard-000001\.tar: member '000000006\.png' declares 1099511627776 bytes"
    with pytest.raises(CorruptShardError, match=declared):
        list(source)


def _write_manifest(root: Path, change: Callable[[dict], object]) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _outside(root: Path, manifest: dict) -> None:
    (root.parent / "outside.tar").write_bytes((root / "shard-000000.tar").read_bytes())
    (root / "inside-link.tar").symlink_to(root.parent / "outside.tar")
    manifest["shards"][0]["file"] = "inside-link.tar"


def _fifo(root: Path, manifest: dict) -> None:
    os.mkfifo(root / "fifo.tar")
    manifest["shards"][0]["file"] = "fifo.tar"


MANIFEST_CASES = {
    "no-classes": (lambda root, m: m.pop("classes"), ManifestError, r"has no 'classes' list"),
    "dev-zero": (
        lambda root, m: m["shards"][0].update(file="/dev/zero"),
        UnsafeShardError,
        r"shard 0 file '/dev/zero' is outside",
    ),
    "dot-dot": (
        lambda root, m: m["shards"][1].update(file="../wds/dst/shard-000001.tar"),
        UnsafeShardError,
        r"shard 1 file '\.\./wds/dst/shard-000001\.tar' is outside",
    ),
    "link-outside": (_outside, UnsafeShardError, r"shard 0 file 'inside-link\.tar' is outside"),
    "fifo": (_fifo, UnsafeShardError, r"shard 0 file 'fifo\.tar' is not a regular file"),
    "missing": (
        lambda root, m: m["shards"][0].update(file="gone.tar"),
        ManifestError,
        r"shard 0 file 'gone\.tar' is missing",
    ),
    "count": (
        lambda root, m: m["shards"][2].update(num_samples="six"),
        ManifestError,
        r"shard 2 has num_samples='six'",
    ),
    "shards": (lambda root, m: m.pop("shards"), ManifestError, r"has no 'shards' list"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_bad_manifests_are_refused_by_name(shards_dir: Path, tmp_path: Path, case: str) -> None:
    root = _copy_shards(shards_dir, tmp_path / "dst")
    change, error, problem = MANIFEST_CASES[case]
    _write_manifest(root, lambda manifest: change(root, manifest))  # type: ignore[operator]
    with pytest.raises(error, match=rf"manifest .*manifest\.json: {problem}"):
        WebDatasetSource(root)


@pytest.mark.parametrize(
    "text", ["{not json", "[1, 2]", "\udcff"], ids=["syntax", "list", "not-utf8"]
)
def test_malformed_manifest_json_is_named(shards_dir: Path, tmp_path: Path, text: str) -> None:
    from fastssl.data.loader import detect_source

    root = _copy_shards(shards_dir, tmp_path / "dst")
    (root / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    for read in (WebDatasetSource, detect_source):
        with pytest.raises(ManifestError, match=r"manifest\.json: .*convert the images again"):
            read(root)


def test_shards_are_read_from_inside_the_folder_only(shards_dir: Path, tmp_path: Path) -> None:
    root = _copy_shards(shards_dir, tmp_path / "dst")
    source = WebDatasetSource(root, shuffle=False)
    (root / "shard-000002.tar").unlink()
    (root / "shard-000002.tar").symlink_to("/dev/zero")  # swapped after the source was made
    with pytest.raises(UnsafeShardError, match=r"shard 2 file 'shard-000002\.tar' is outside"):
        list(source)
