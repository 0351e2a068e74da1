"""WebDataset tars from anywhere: plain tars, patterns, lists, HTTP, S3 and pipes.

The tars are written by ``webdataset.ShardWriter`` (as users' own datasets are), with images
that encode their index, so a test can prove every sample arrived exactly once. Remote
reading runs against real servers on 127.0.0.1: ``python -m http.server`` and moto's
S3-compatible server (``moto_server``), started by fixtures.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import webdataset
from PIL import Image
from torch.utils.data import DataLoader

from fastssl.cli import main
from fastssl.data import sources
from fastssl.data.loader import detect_source, make_loader, resolve_backend
from fastssl.data.sources import count_samples, expand_spec, resolve_shards
from fastssl.data.webdataset_source import WebDatasetSource
from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.view_spec import ViewSpec
from tests.data.test_shards import index_image, read_index
from tests.train._tiny import TINY

N_SHARDS, PER_SHARD = 4, 5
N = N_SHARDS * PER_SHARD
PATTERN = "shard-{000000..000003}.tar"


def _png(index: int) -> bytes:
    out = io.BytesIO()
    index_image(index, (12, 10)).save(out, format="PNG")
    return out.getvalue()


def write_tars(root: Path, ext: str = "png", label: str = "cls") -> Path:
    """``N_SHARDS`` tars of ``PER_SHARD`` samples by ``webdataset.ShardWriter``: key
    ``img-<index>``, the image, a class (``.cls`` or a JSON ``label`` field)."""
    root.mkdir(parents=True, exist_ok=True)
    with webdataset.ShardWriter(str(root / "shard-%06d.tar"), maxcount=PER_SHARD) as sink:
        for index in range(N):
            sample: dict[str, Any] = {"__key__": f"img-{index:04d}", ext: _png(index)}
            if label == "cls":
                sample["cls"] = str(index % 3).encode()
            elif label == "json":
                sample["json"] = json.dumps({"label": index % 3, "caption": "x"}).encode()
            sink.write(sample)
    return root


def _collate(batch: list) -> list:
    return batch


def read_all(spec: Any, rank: int = 0, world: int = 1, workers: int = 0, **kwargs: Any) -> list:
    source = WebDatasetSource(spec, rank=rank, world_size=world, shuffle_buffer=4, **kwargs)
    loader = DataLoader(source, batch_size=3, num_workers=workers, collate_fn=_collate)
    return [(read_index(image), target, key) for batch in loader for image, target, key in batch]


@pytest.fixture(scope="module")
def tars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tars(tmp_path_factory.mktemp("tars"))


@pytest.fixture(scope="module")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = previous


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"no server on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def http_url(tars: Path) -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = subprocess.Popen(
        command, cwd=tars, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(port, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def s3_url(tars: Path) -> Iterator[str]:
    """``s3://bucket`` on moto's server, the endpoint and keys in the AWS_* variables."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    server_bin = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = _free_port()
    server = subprocess.Popen(
        [server_bin, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        _wait_for(port, server)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="bucket")
        for tar in sorted(tars.glob("*.tar")):
            client.upload_file(str(tar), "bucket", tar.name)
        yield "s3://bucket"
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        server.wait(10)


# --- specs and counts -------------------------------------------------------------------------


def test_specs_name_the_same_shards(tars: Path, tmp_path: Path) -> None:
    listed = tmp_path / "shards.txt"
    names = sorted(str(p) for p in tars.glob("*.tar"))
    listed.write_text("# my shards\n" + "\n".join(names) + "\n")
    assert expand_spec(tars) == names
    assert expand_spec(str(tars / PATTERN)) == names
    assert expand_spec(listed) == names
    assert expand_spec(names[:2]) == names[:2]
    relative = tars / "relative.txt"  # entries relative to the list's own folder
    relative.write_text("shard-000001.tar\n")
    assert expand_spec(relative) == [str(tars / "shard-000001.tar")]
    relative.unlink()
    assert expand_spec(f"http://host/{PATTERN}") == [
        f"http://host/shard-{i:06d}.tar" for i in range(N_SHARDS)
    ]
    for spec in (tars, str(tars / PATTERN), listed, names, "s3://b/x.tar", "pipe:cat x.tar"):
        assert detect_source(spec) == "webdataset"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("nowhere/shard.tar", FileNotFoundError, "does not exist"),
        ("{empty}", FileNotFoundError, "does not exist"),
    ],
)
def test_bad_specs_are_named(spec: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        expand_spec(spec)


def test_counts_come_from_an_index_else_one_cached_scan(
    tars: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "copy"
    shutil.copytree(tars, local)
    urls = sorted(str(p) for p in local.glob("*.tar"))
    scans: list[str] = []
    scan = sources._scan
    monkeypatch.setattr(sources, "_scan", lambda url: scans.append(url) or scan(url))
    # A DALI index beside the first tar gives its count without a scan.
    Path(urls[0][:-4] + ".idx").write_text(f"v1.2 {PER_SHARD}\n")
    assert count_samples(urls) == [PER_SHARD] * N_SHARDS
    assert scans == urls[1:]
    assert count_samples(urls) == [PER_SHARD] * N_SHARDS  # cached: no scan
    assert scans == urls[1:]
    # A changed file is counted again (the cache key holds its size and mtime).
    with webdataset.TarWriter(urls[1]) as sink:
        sink.write({"__key__": "only", "png": _png(0)})
    assert count_samples(urls)[1] == 1
    assert scans[-1] == urls[1]


# --- reading ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 2), (3, 1)])
def test_plain_tars_exactly_once_across_ranks_and_workers(
    tars: Path, isolated_cache: Path, world: int, workers: int
) -> None:
    seen = Counter()
    for rank in range(world):
        items = read_all(tars, rank, world, workers)
        seen.update(index for index, _, _ in items)
        assert all(target == index % 3 for index, target, _ in items)
        assert all(key == f"img-{index:04d}" for index, _, key in items)
    assert seen == Counter(range(N))


@pytest.mark.parametrize(
    ("ext", "label", "label_key", "expected"),
    [
        ("jpg", "cls", "cls", lambda i: i % 3),
        ("webp", "json", "json:label", lambda i: i % 3),
        ("png", "json", "cls", lambda i: 0),  # no .cls member: unlabeled, class 0
        ("png", "cls", "none", lambda i: 0),
    ],
)
def test_images_and_labels_as_users_store_them(
    tmp_path: Path, isolated_cache: Path, ext: str, label: str, label_key: str, expected: Any
) -> None:
    root = write_tars(tmp_path / "t", ext=ext, label=label)
    items = read_all(root, shuffle=False, label_key=label_key)
    assert len(items) == N
    if ext == "png":  # lossless: the pixels still spell the index
        assert [i for i, _, _ in items] == list(range(N))
    keys = [int(key.split("-")[1]) for _, _, key in items]
    assert [t for _, t, _ in items] == [expected(k) for k in keys]


def test_bad_label_key_is_refused(tars: Path) -> None:
    with pytest.raises(ValueError, match=r"label_key='json:'"):
        WebDatasetSource(tars, label_key="json:")


def test_resampled_mode_draws_a_set_epoch_length(tars: Path) -> None:
    with pytest.raises(ValueError, match="set num_samples"):
        WebDatasetSource(tars, resampled=True)
    first = read_all(tars, resampled=True, num_samples=13, seed=1)
    assert len(first) == 13
    assert all(0 <= index < N for index, _, _ in first)
    assert first == read_all(tars, resampled=True, num_samples=13, seed=1)  # seeded
    two = [read_all(tars, rank, 2, resampled=True, num_samples=13) for rank in (0, 1)]
    assert [len(items) for items in two] == [6, 7]  # 13 // 2 and the rest


def test_pipe_urls_read_a_command_output(tars: Path, isolated_cache: Path) -> None:
    urls = [f"pipe:cat {p}" for p in sorted(tars.glob("*.tar"))]
    assert Counter(i for i, _, _ in read_all(urls)) == Counter(range(N))


def test_http_pattern_reads_like_local_files(
    tars: Path, http_url: str, isolated_cache: Path
) -> None:
    spec = f"{http_url}/{PATTERN}"
    assert resolve_shards(spec).num_samples == N  # one scan over HTTP, then cached
    seen = Counter()
    for rank in range(2):
        seen.update(i for i, _, _ in read_all(spec, rank, 2, workers=1))
    assert seen == Counter(range(N))


def test_s3_pattern_reads_with_the_endpoint_from_the_environment(
    s3_url: str, isolated_cache: Path
) -> None:
    items = read_all(f"{s3_url}/{PATTERN}", workers=2)
    assert Counter(i for i, _, _ in items) == Counter(range(N))


def test_missing_remote_shard_names_the_url(http_url: str, isolated_cache: Path) -> None:
    with pytest.raises(Exception, match=r"shard-000009\.tar"):
        resolve_shards(f"{http_url}/shard-000009.tar")


def test_dali_falls_back_to_torch_for_tars_it_cannot_read(tars: Path) -> None:
    for backend in ("auto", "dali"):
        choice = resolve_backend(backend, "webdataset", "cuda", None, str(tars))
        assert (choice.name, choice.fallback) == ("torch", True)
        assert "has no DALI index shard-000000.idx beside it" in choice.reason


def _indexed(root: Path) -> Path:
    """DALI index files beside the tars, written by DALI's own ``wds2idx``."""
    tool = Path(sys.executable).with_name("wds2idx")
    for tar in sorted(root.glob("*.tar")):
        subprocess.run([str(tool), str(tar), str(tar.with_suffix(".idx"))], check=True)
    return root


@pytest.mark.dali
@pytest.mark.parametrize("label", ["cls", "json"])
def test_dali_reads_local_tars_with_index_files(tmp_path: Path, label: str) -> None:
    pytest.importorskip("nvidia.dali")
    root = _indexed(write_tars(tmp_path / "tars", label=label))
    choice = resolve_backend("dali", "webdataset", "cpu", None, str(root))
    if label == "json":  # no .cls member: DALI has no targets to read
        assert (choice.name, choice.fallback) == ("torch", True)
        assert "has no .cls member" in choice.reason
        return
    assert (choice.name, choice.fallback) == ("dali", False)
    assert resolve_backend("dali", "webdataset", "cpu", None, str(root), "none").name == "torch"
    spec = ViewSpec(crop_size=None, hf_prob=0.0, cj_prob=0.0, gray_prob=0.0, blur_prob=0.0)
    spec = spec.replace(normalize_mean=None, normalize_std=None)
    loader = make_loader(
        str(root / PATTERN), MultiViewTransform([ViewTransform(spec)]), backend="dali",
        batch_size=4, num_workers=1, drop_last=False, world_size=1, rank=0,
    )  # fmt: skip
    assert loader.backend == "dali" and len(loader) == N // 4
    seen = {}
    for views, targets, keys in loader:
        for image, target, key in zip(views[0], targets.tolist(), keys, strict=True):
            index = read_index(_to_pil(image))
            assert key == f"img-{index:04d}" and target == index % 3
            seen[index] = key
    assert sorted(seen) == list(range(N))


def _to_pil(image: torch.Tensor) -> Image.Image:
    pixels = image.permute(1, 2, 0) * 255.0  # ToTensor's scale, unnormalized
    return Image.fromarray(pixels.round().clamp(0, 255).byte().numpy())


# --- what users run ---------------------------------------------------------------------------


def _tiny_recipe(tmp_path: Path) -> Path:
    import yaml

    recipe = tmp_path / "tiny.yaml"
    data = {"input_size": 8, "num_workers": 0, "batch_size": 4}
    recipe.write_text(yaml.safe_dump({"method": TINY, "data": data}))
    return recipe


@pytest.mark.parametrize("where", ["http", "s3", "shardwriter"])
def test_pretrain_trains_from_remote_and_foreign_tars(
    where: str, tars: Path, tmp_path: Path, isolated_cache: Path, request: pytest.FixtureRequest
) -> None:
    if where == "shardwriter":
        data = str(tars)
    else:
        base = request.getfixturevalue("http_url" if where == "http" else "s3_url")
        data = f"{base}/{PATTERN}"
    out = tmp_path / "out"
    args = ["pretrain", str(_tiny_recipe(tmp_path)), "--data", data, "--max-steps", "3"]
    assert main([*args, "--accelerator", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["data_backend"] == "torch"


def test_loader_from_a_list_of_urls(tars: Path, http_url: str, isolated_cache: Path) -> None:
    from fastssl.transforms import SimCLRTransform

    urls = [f"{http_url}/{p.name}" for p in sorted(tars.glob("*.tar"))]
    loader = make_loader(urls, SimCLRTransform(input_size=8), batch_size=4, num_workers=0)
    keys = [key for _, _, batch_keys in loader for key in batch_keys]
    assert len(keys) == len(set(keys)) == N


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_samples_are_replaced_and_counted_per_epoch(
    tmp_path: Path, isolated_cache: Path, workers: int
) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    with webdataset.ShardWriter(str(root / "shard-%06d.tar"), maxcount=PER_SHARD) as sink:
        for index in range(N):
            image = b"not an image" if index in (3, 11) else _png(index)
            sink.write({"__key__": f"img-{index:04d}", "png": image, "cls": b"0"})
    source = WebDatasetSource(root, shuffle_buffer=4)
    loader = DataLoader(source, batch_size=3, num_workers=workers, collate_fn=_collate)
    for epoch in range(2):
        source.set_epoch(epoch)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            items = [item for batch in loader for item in batch]
        assert len(items) == N  # every position delivered, the bad ones by stand-ins
        assert source.num_unreadable == 2  # this epoch's, counted across the workers
        if workers == 0 and epoch == 0:  # (workers warn in their own processes)
            assert any("unreadable sample is replaced" in str(w.message) for w in caught)


@pytest.mark.parametrize(("batch", "workers"), [(4, 3), (6, 2), (3, 2)])
def test_workers_split_at_whole_batches_so_no_full_batch_is_lost(
    tars: Path, isolated_cache: Path, batch: int, workers: int
) -> None:
    # Each worker batches its own stream; split at arbitrary points, every worker would
    # end on a partial batch that drop_last throws away (fewer batches than len() says).
    source = WebDatasetSource(tars, batch_size=batch, shuffle_buffer=4)
    kept = DataLoader(
        source, batch_size=batch, num_workers=workers, drop_last=True, collate_fn=_collate
    )
    batches = list(kept)
    assert len(batches) == len(kept) == N // batch
    everything = DataLoader(source, batch_size=batch, num_workers=workers, collate_fn=_collate)
    seen = Counter(read_index(image) for b in everything for image, _, _ in b)
    assert seen == Counter(range(N))  # still exactly once without drop_last
