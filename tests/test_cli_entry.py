"""The ``clinvault`` command as a shell runs it: exit codes, error output, complete output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env


def _clinvault(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("clinvault", path=str(Path(sys.executable).parent))
    assert exe is not None
    return subprocess.run(
        [exe, *args], env=cli_env(home), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "No such option: --bogus"),
        (["backup", "show"], "Missing argument"),
        (["backup", "create", "--type", "everything"], "Invalid value"),
    ],
)
def test_a_usage_error_is_one_message_and_exit_code_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = _clinvault(tmp_path, *args)

    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_a_clinvault_error_is_one_line_and_its_exit_code(tmp_path: Path) -> None:
    done = _clinvault(tmp_path, "backup", "show", "no-such-backup")

    assert done.returncode == 3
    assert done.stderr.strip() == "error: backup 'no-such-backup' not found"
    assert done.stdout == ""


def test_output_is_complete_and_exit_handlers_run_before_the_process_ends(
    tmp_path: Path,
) -> None:
    """``run`` ends the process without the interpreter's teardown: what was printed is all
    there, and exit handlers registered by anyone have run, but the teardown (which would
    finalize this object) has not."""
    script = (
        "import atexit, sys\n"
        "class Torn:\n"
        "    def __del__(self): print('torn down')\n"
        "torn = Torn()\n"
        "atexit.register(lambda: print('exit handler ran', flush=False))\n"
        "from clinvault.cli.app import run\n"
        "sys.argv = ['clinvault', 'backup', 'list', '--json']\n"
        "run()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    listed, _, rest = done.stdout.rpartition("]")
    assert json.loads(listed + "]") == []
    assert rest.strip() == "exit handler ran"
