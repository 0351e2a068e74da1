import subprocess
import sys

import pytest

from fastssl import cli


def test_help_lists_the_four_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("shards", "pretrain", "profile", "eval"):
        assert f"    {name}" in out


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fastssl", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "pretrain" in result.stdout


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["nonsense"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["pretrain", "--help"]])
def test_help_documents_the_exit_codes(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(argv)
    out = capsys.readouterr().out
    for line in ("1    internal error", "2    user error", "3    non-finite training"):
        assert line in out, line


@pytest.mark.parametrize(
    ("error", "code"),
    [(ValueError(), 2), (FileNotFoundError(), 2), (ModuleNotFoundError(name="nvidia"), 2),
     (ModuleNotFoundError(name="fastssl.x"), 1), (ImportError("cannot import name"), 1),
     (RuntimeError(), 1), (KeyError(), 1), (KeyboardInterrupt(), 130)],
)  # fmt: skip
def test_exit_code_of_each_kind_of_error(error: BaseException, code: int) -> None:
    assert cli.exit_code(error) == code


def test_non_finite_training_exits_3() -> None:
    from fastssl.train.callbacks import NonFiniteStateError
    from fastssl.train.module import NonFiniteLossError

    assert cli.exit_code(NonFiniteLossError("nan")) == cli.exit_code(NonFiniteStateError("")) == 3
