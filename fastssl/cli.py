"""The ``fastssl`` command line: ``fastssl <command> [options]``.

Each command lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs (or its
``--help`` is shown), so ``fastssl --help`` answers without importing torch.

Every command exits with the codes of :data:`EXIT_CODES_HELP`: errors a user can fix are
one line on stderr (``--debug`` or ``FASTSSL_DEBUG=1`` adds the traceback), a bug prints
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
import warnings
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


#: Exit codes of every command.
EXIT_OK = 0
EXIT_INTERNAL = 1  # Python's own code for an unhandled exception
EXIT_USER = 2  # argparse's code for a bad flag
EXIT_NON_FINITE = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    internal error: a bug in fastssl or a library; the traceback is printed, please
       report it
  2    user error: a bad flag, recipe, data path or checkpoint (a refused or foreign one, an
       output folder holding another run); a one-line message says what to fix
       (`fastssl --debug ...` or FASTSSL_DEBUG=1 also prints the traceback)
  3    non-finite training: the loss, a weight or a BatchNorm statistic became NaN or
       infinite; the run stopped and its last good (finite) checkpoint is kept
  130  interrupted (Ctrl-C)"""

#: Exceptions that mean "the user asked for something wrong", reported in one line.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # fastssl's ConfigError, CheckpointError, RunExistsError are ValueErrors
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def debug_enabled() -> bool:
    """Whether tracebacks of user errors are printed (``--debug`` / ``FASTSSL_DEBUG=1``)."""
    return os.environ.get("FASTSSL_DEBUG", "") not in ("", "0")


def _is_non_finite(error: BaseException) -> bool:
    # Imported only if training ran: `fastssl --help` must not import torch.
    module = sys.modules.get("fastssl.train.module")
    return module is not None and isinstance(error, module.NonFiniteLossError)


def exit_code(error: BaseException) -> int:
    """The exit code of a command that stopped with ``error`` (see :data:`EXIT_CODES_HELP`).

    >>> exit_code(ValueError("bad flag")), exit_code(RuntimeError("bug"))
    (2, 1)
    >>> exit_code(ModuleNotFoundError("no DALI", name="nvidia")), exit_code(ImportError("bug"))
    (2, 1)
    """
    if _is_non_finite(error):
        return EXIT_NON_FINITE
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, USER_ERRORS):
        return EXIT_USER
    if isinstance(error, ModuleNotFoundError) and not (error.name or "").startswith("fastssl"):
        return EXIT_USER  # an optional dependency (DALI, FFCV, numba) is not installed
    return EXIT_INTERNAL


def report_error(prog: str, error: BaseException) -> int:
    """Prints ``error`` for the user on stderr and returns its exit code.

    A user error or a non-finite run is one line (with the traceback under ``--debug``);
    an internal error prints its traceback.
    """
    code = exit_code(error)
    if code == EXIT_INTERNAL or debug_enabled():
        traceback.print_exception(error, file=sys.stderr)
    if code == EXIT_INTERNAL:
        print(
            f"{prog}: internal error: {type(error).__name__}: {error} (the traceback is "
            "above; please report it)",
            file=sys.stderr,
        )
    elif code == EXIT_INTERRUPTED:
        print(f"{prog}: interrupted", file=sys.stderr)
    else:
        print(f"{prog}: error: {error}", file=sys.stderr)
    return code


class CommandUnavailableError(RuntimeError):
    """Raised when a command's implementation is not part of this installation."""


def _load(command: Command) -> ModuleType:
    try:
        return importlib.import_module(command.module)
    except ModuleNotFoundError as error:
        if error.name is not None and command.module.startswith(error.name):
            raise CommandUnavailableError(
                f"`fastssl {command.name}` is not available in fastssl {__version__} "
                f"(module {command.module} is missing): reinstall fastssl (pip install -e .)."
            ) from error
        raise


def build_parser(load_commands: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Builds the argument parser; only the commands named in ``load_commands`` get
    their full options (which imports their modules)."""
    parser = argparse.ArgumentParser(
        prog="fastssl",
        description="fastssl: fast self-supervised learning for computer vision.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `fastssl <command> --help` for the options of a command.\n\n" + EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"fastssl {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of user errors too (or set FASTSSL_DEBUG=1)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.summary, description=command.summary)
        if command.name in load_commands:
            module = _load(command)
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    return parser


#: Third-party messages a command's user cannot act on: Lightning's start-up banners and tips
#: (fastssl prints the setup it resolved instead) and deprecations raised inside packages.
_THIRD_PARTY_LOGGERS = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")
_THIRD_PARTY_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)",)


def quiet_third_party() -> None:
    """Keeps a command's output to what fastssl says (``--debug`` keeps everything).

    Lightning's info lines ("GPU available: False", "Using bfloat16 Automatic Mixed
    Precision", tips about its cloud products) go below the shown level; warnings that other
    packages raise about their own dependencies are ignored. Warnings about the user's run
    (fastssl's, and Lightning's warnings) still show.
    """
    for name in _THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in _THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastssl`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    names = {command.name for command in COMMANDS}
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    try:
        parser = build_parser(load_commands=[chosen] if chosen in names else [])
    except CommandUnavailableError as error:
        print(f"fastssl: error: {error}", file=sys.stderr)
        return EXIT_USER
    args = parser.parse_args(argv)
    previous = os.environ.get("FASTSSL_DEBUG")
    if args.debug:
        os.environ["FASTSSL_DEBUG"] = "1"  # read by the commands' report_error calls
    else:
        quiet_third_party()
    try:
        return int(args._run(args))
    except (Exception, KeyboardInterrupt) as error:
        return report_error(f"fastssl {args.command}", error)
    finally:
        if args.debug:
            if previous is None:
                os.environ.pop("FASTSSL_DEBUG", None)
            else:
                os.environ["FASTSSL_DEBUG"] = previous
