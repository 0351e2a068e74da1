"""``fastssl shards SRC DST``: convert an image folder into WebDataset or FFCV shards.

The work is done by :func:`fastssl.data.shards.convert`; this module parses the options,
reports errors as one readable line and prints a summary.

Example:
    >>> from fastssl.cli import main
    >>> main(["shards", "images/", "shards/", "--max-count", "1000", "--workers", "4"])
    0
"""

from __future__ import annotations

import argparse
import sys

from fastssl.data import shards
from fastssl.utils.argtypes import positive_int

DESCRIPTION = """\
Convert an image folder (one sub-folder per class, as for torchvision's ImageFolder) into
shards. Every file is decoded with Pillow first; files that do not decode (corrupt,
truncated, empty, not an image) are skipped and listed in DST/manifest.json with the
reason, as are dangling symbolic links, link loops and FIFOs or devices (never opened).
Images are stored upright (EXIF orientation) and 16-bit images scaled to 8 bits wherever
--max-side re-encodes them; readers do the same to the original bytes. Samples go
into shards in a seeded shuffled order, and the same SRC and options give byte-identical
output. WebDataset shards are DST/shard-NNNNNN.tar, each with its DALI index
shard-NNNNNN.idx; a sample is <key>.<ext> (the image), <key>.cls (class index) and
<key>.json (source path, original width and height). An interrupted conversion (even
killed) resumes when run again with the same arguments. A run locks DST/.lock: a second
run into the same DST stops at once with an error (exit code 2). The lock goes with its
process, even a killed one, so a .lock file left behind never blocks a later run."""


def _size(text: str) -> int:
    try:
        return shards.parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _quality(text: str) -> int:
    value = positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [1, 100]")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``fastssl shards`` to ``parser``."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("src", metavar="SRC", help="image folder to convert (class sub-folders)")
    parser.add_argument(
        "dst",
        metavar="DST",
        help="output folder: new or empty, or holding an interrupted run of the same command",
    )
    parser.add_argument(
        "--format",
        choices=("webdataset", "ffcv"),
        default="webdataset",
        help="webdataset: tar shards with DALI indexes; ffcv: one DST/dataset.beton "
        "(needs FFCV installed) (default: %(default)s)",
    )
    parser.add_argument(
        "--max-count",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="at most N samples per shard (default: %(default)s)",
    )
    parser.add_argument(
        "--max-size",
        type=_size,
        default="1GB",
        metavar="SIZE",
        help="at most SIZE bytes per shard, e.g. 1GB, 500MB, 64MiB; a larger single image "
        "gets a shard of its own (default: %(default)s)",
    )
    parser.add_argument(
        "--max-side",
        type=positive_int,
        default=None,
        metavar="PX",
        help="re-encode as JPEG, shrunk so the longer side is PX pixels, every image whose "
        "longer side exceeds PX; others keep their original bytes (default: keep all bytes)",
    )
    parser.add_argument(
        "--quality",
        type=_quality,
        default=90,
        metavar="Q",
        help="JPEG quality (1-100) of re-encoded images and of FFCV's images "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="processes decoding images in parallel; the output does not depend on it "
        "(default: the number of usable cores)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of the sample order across shards (default: %(default)s)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars and no summary on stdout"
    )


def run(args: argparse.Namespace) -> int:
    """Runs the conversion; returns the exit code (0 done, 2 bad input or DST busy)."""
    try:
        settings = shards.ShardSettings(
            format=args.format,
            max_count=args.max_count,
            max_size=args.max_size,
            max_side=args.max_side,
            quality=args.quality,
            seed=args.seed,
        )
        manifest = shards.convert(
            args.src, args.dst, settings, workers=args.workers, progress=not args.quiet
        )
    except (ValueError, ImportError, shards.DstLockedError) as error:
        print(f"fastssl shards: error: {error}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(
            f"{manifest['num_samples']} samples in {len(manifest['shards'])} "
            f"{'shard' if len(manifest['shards']) == 1 else 'shards'} at {args.dst}; "
            f"{len(manifest['skipped'])} skipped (see manifest.json)"
        )
    return 0
