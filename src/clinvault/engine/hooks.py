"""Pre- and post-restore hooks: operator commands that stop and restart dependent services.

A hook is an argv list from the settings, run without a shell, with a timeout, in its own
process group (so a timeout kills its children too). Its environment is the process's minus
anything that could hold a secret (``PG*``, ``CLINVAULT_*``, names with PASSWORD, SECRET,
TOKEN or KEY), plus a few ``CLINVAULT_HOOK_*`` facts about the restore. The tail of its
output goes into the error when it fails, so the operator sees why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clinvault.errors import ClinVaultError, ConfigError

_OUTPUT_TAIL = 2000
_SECRET_MARKERS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL")


class HookError(ClinVaultError):
    """A restore hook failed, timed out or could not be started."""

    exit_code = 6
    title = "Restore hook failed"


@dataclass(frozen=True, slots=True)
class HookResult:
    name: str
    command: str
    returncode: int
    seconds: float
    output: str


def hook_environment(facts: Mapping[str, str]) -> dict[str, str]:
    """The hook's environment: no secrets, plus ``CLINVAULT_HOOK_<FACT>`` variables."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "CLINVAULT_"))
        and not any(marker in key.upper() for marker in _SECRET_MARKERS)
    }
    for key, value in facts.items():
        env[f"CLINVAULT_HOOK_{key.upper()}"] = value
    return env


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= _OUTPUT_TAIL else "..." + text[-_OUTPUT_TAIL:]


def run_hook(
    name: str,
    argv: Sequence[str],
    *,
    timeout: float,
    facts: Mapping[str, str] | None = None,
) -> HookResult:
    """Run one hook to completion; ``HookError`` unless it exits 0 within ``timeout``."""
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise ConfigError(f"the {name} hook must be a non-empty list of arguments")
    command = Path(argv[0]).name
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=hook_environment(facts or {}),
            start_new_session=True,
        )
    except OSError as exc:
        raise HookError(f"the {name} hook {command!r} could not start: {exc.strerror}") from exc
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise HookError(
            f"the {name} hook {command!r} did not finish within {timeout:g} s and was killed; "
            f"output: {_tail(output) or '(none)'}"
        ) from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise HookError(
            f"the {name} hook {command!r} failed (exit {proc.returncode}); "
            f"output: {_tail(output) or '(none)'}"
        )
    return HookResult(name, command, proc.returncode, round(seconds, 3), _tail(output))
