"""The ``fastssl`` command line: ``fastssl <command> [options]``.

Each command lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs (or its
``--help`` is shown), so ``fastssl --help`` answers without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from fastssl import __version__


@dataclass(frozen=True)
class Command:
    """One subcommand of the CLI."""

    name: str  # what the user types after ``fastssl``
    module: str  # module with ``add_arguments(parser)`` and ``run(args) -> int``
    summary: str  # one line for ``fastssl --help``


COMMANDS: tuple[Command, ...] = (
    Command(
        "shards",
        "fastssl.data.shards_cli",
        "convert an image folder into WebDataset or FFCV shards",
    ),
    Command(
        "pretrain", "fastssl.train.cli", "pretrain a self-supervised method from a YAML recipe"
    ),
    Command(
        "profile",
        "fastssl.profile.cli",
        "measure data loading against compute and say which bounds a run",
    ),
    Command("eval", "fastssl.eval.cli", "evaluate a checkpoint: kNN, linear probe or fine-tuning"),
    Command("export", "fastssl.eval.export_cli", "write a checkpoint's backbone weights for reuse"),
)


class CommandUnavailableError(RuntimeError):
    """Raised when a command's implementation is not part of this installation."""


def _load(command: Command) -> ModuleType:
    try:
        return importlib.import_module(command.module)
    except ModuleNotFoundError as error:
        if error.name is not None and command.module.startswith(error.name):
            raise CommandUnavailableError(
                f"`fastssl {command.name}` is not available in fastssl {__version__} "
                f"(module {command.module} is missing). See the README's roadmap."
            ) from error
        raise


def build_parser(load_commands: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Builds the argument parser; only the commands named in ``load_commands`` get
    their full options (which imports their modules)."""
    parser = argparse.ArgumentParser(
        prog="fastssl",
        description="fastssl: fast self-supervised learning for computer vision.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `fastssl <command> --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"fastssl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.summary, description=command.summary)
        if command.name in load_commands:
            module = _load(command)
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastssl`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    names = {command.name for command in COMMANDS}
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    try:
        parser = build_parser(load_commands=[chosen] if chosen in names else [])
    except CommandUnavailableError as error:
        print(f"fastssl: error: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    return int(args._run(args))
