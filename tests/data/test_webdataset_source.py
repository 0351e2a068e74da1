"""Tests of WebDatasetSource: exactly once per epoch across ranks x workers, resume, safety."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from fastssl.data.shards import ShardSettings, convert
from fastssl.data.webdataset_source import (
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
    with pytest.raises(FileNotFoundError, match=r"manifest\.json not found"):
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
