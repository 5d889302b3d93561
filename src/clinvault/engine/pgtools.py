"""One command layer for the PostgreSQL client tools (``pg_dump``, ``pg_restore``, ``psql``).

After barman's ``command_wrappers``: binaries are resolved and version-probed up front, run
from argv lists (never a shell), credentials travel in a private passfile named by the
environment (never argv), stderr is captured into a clear error, and every run has a timeout
and can be cancelled.

A client is chosen per server: the lowest major version that is at least the server's, so
that dumps stay restorable into that server (newer ``pg_dump`` releases emit settings older
servers reject).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from clinvault.engine.embedded import bundled_bin_dir
from clinvault.engine.pgconn import ConnInfo
from clinvault.errors import CancelledError, ToolError, ToolNotFoundError

TOOLS = ("pg_dump", "pg_restore", "psql")
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_STDERR_LINES = 40


@dataclass(frozen=True, slots=True)
class PgTool:
    name: str
    path: Path
    major: int
    version: str

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.path})"


def probe_version(path: Path) -> tuple[int, str] | None:
    """Major version and version text printed by ``path --version``; None if unusable."""
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    if not match:
        return None
    text = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
    return int(match.group(1)), text


def candidate_dirs(explicit: Path | None = None) -> list[Path]:
    """Where to look for client binaries, most preferred first."""
    dirs: list[Path] = []
    if explicit is not None:
        dirs.append(explicit)
    dirs.extend(Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p)
    versioned = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if d.parent.name.isdigit()]
    dirs.extend(sorted(versioned, key=lambda d: int(d.parent.name), reverse=True))
    bundled = bundled_bin_dir()
    if bundled is not None:
        dirs.append(bundled)
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


@dataclass
class PgToolkit:
    """Finds the client tools to use for a server of a given major version."""

    explicit_dir: Path | None = None
    _probed: dict[Path, tuple[int, str] | None] = field(default_factory=dict)

    def candidates(self, name: str) -> list[PgTool]:
        paths = [
            path
            for directory in candidate_dirs(self.explicit_dir)
            if (path := directory / name).is_file() and os.access(path, os.X_OK)
        ]
        reals = [path.resolve() for path in paths]
        unprobed = list(dict.fromkeys(real for real in reals if real not in self._probed))
        if unprobed:
            # Side by side: a probe is mostly waiting for a process to start (Debian's
            # pg_wrapper is a Perl script), and a backup waits for all of them.
            with ThreadPoolExecutor(max_workers=len(unprobed)) as pool:
                self._probed.update(zip(unprobed, pool.map(probe_version, unprobed), strict=True))
        found: list[PgTool] = []
        for path, real in zip(paths, reals, strict=True):
            probed = self._probed[real]
            if probed is not None and all(t.path.resolve() != real for t in found):
                found.append(PgTool(name, path, probed[0], probed[1]))
        return found

    def find(self, name: str, server_major: int) -> PgTool:
        """The client ``name`` to use against a server of ``server_major``."""
        tools = self.candidates(name)
        if self.explicit_dir is not None:
            explicit = [t for t in tools if t.path.parent == self.explicit_dir]
            if explicit and explicit[0].major >= server_major:
                return explicit[0]
        usable = sorted((t for t in tools if t.major >= server_major), key=lambda t: t.major)
        if usable:
            return usable[0]
        seen = ", ".join(f"{t.version} at {t.path}" for t in tools) or "none"
        raise ToolNotFoundError(
            f"no {name} of major version {server_major} or newer found (seen: {seen}); "
            "install the PostgreSQL client tools or set CLINVAULT_PG_BIN_DIR"
        )


def _passfile_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def tool_environment(conn: ConnInfo) -> Iterator[dict[str, str]]:
    """Process environment for a client tool: connection facts, and the password in a passfile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(conn.libpq_env())
    password = env.pop("PGPASSWORD", None)
    env.setdefault("PGCONNECT_TIMEOUT", "30")
    if password is None:
        yield env
        return
    directory = tempfile.mkdtemp(prefix="clinvault-pass-")
    try:
        passfile = Path(directory) / "pgpass"
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            fields = [conn.host, str(conn.port), "*", conn.user, password]
            handle.write(":".join(_passfile_escape(f) for f in fields) + "\n")
        env["PGPASSFILE"] = str(passfile)
        yield env
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _redact(text: str, conn: ConnInfo) -> str:
    if conn.password:
        text = text.replace(conn.password, "********")
    return text


class _StderrCollector(threading.Thread):
    """Drains a process's stderr so it can never block, keeping the last lines."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self.lines: deque[str] = deque(maxlen=_STDERR_LINES)

    def run(self) -> None:
        for raw in self._stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines)


class ToolProcess:
    """A running client tool whose stdout (or stdin) the caller streams."""

    def __init__(
        self,
        tool: PgTool,
        args: Sequence[str],
        conn: ConnInfo,
        env: dict[str, str],
        *,
        stdin: int | None,
        stdout: int | None,
        timeout: float,
        cancel: threading.Event | None,
    ) -> None:
        self.tool = tool
        self._conn = conn
        self.argv = [str(tool.path), *args]
        self.proc = subprocess.Popen(
            self.argv,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stderr is not None
        self._stderr = _StderrCollector(self.proc.stderr)
        self._stderr.start()
        self._cancel = cancel
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timed_out = False
        self._timer.start()
        self._watch_stop = threading.Event()
        if cancel is not None:
            threading.Thread(target=self._watch_cancel, daemon=True).start()

    def _expire(self) -> None:
        self._timed_out = True
        self.kill()

    def _watch_cancel(self) -> None:
        assert self._cancel is not None
        while not self._watch_stop.is_set():
            if self._cancel.wait(0.2):
                self.kill()
                return

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def stderr_text(self) -> str:
        return _redact(self._stderr.text(), self._conn)

    def finish(self) -> str:
        """Wait for the tool; raise a clear error unless it succeeded. Returns its stderr."""
        try:
            code = self.proc.wait()
        finally:
            self._timer.cancel()
            self._watch_stop.set()
        self._stderr.join(timeout=5)
        if self._cancel is not None and self._cancel.is_set():
            raise CancelledError(f"{self.tool.name} was cancelled")
        if self._timed_out:
            raise ToolError(f"{self.tool.name} timed out")
        if code != 0:
            detail = self.stderr_text() or "no error output"
            raise ToolError(f"{self.tool.name} failed (exit {code}): {detail}")
        return self.stderr_text()


@contextlib.contextmanager
def open_tool(
    tool: PgTool,
    args: Sequence[str],
    conn: ConnInfo,
    *,
    read_stdout: bool = False,
    write_stdin: bool = False,
    timeout: float = 6 * 3600.0,
    cancel: threading.Event | None = None,
) -> Iterator[ToolProcess]:
    """Run ``tool`` with ``args`` against ``conn``; the caller streams stdout or stdin.

    Leaving the block waits for the tool and raises ``ToolError`` if it failed; leaving it with
    an exception kills the tool first.
    """
    with tool_environment(conn) as env:
        process = ToolProcess(
            tool,
            args,
            conn,
            env,
            stdin=subprocess.PIPE if write_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if read_stdout else subprocess.DEVNULL,
            timeout=timeout,
            cancel=cancel,
        )
        try:
            yield process
        except BaseException:
            process.kill()
            with contextlib.suppress(ToolError, CancelledError):
                process.finish()
            raise
        finally:
            for stream in (process.proc.stdin, process.proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        process.finish()


def run_tool(
    tool: PgTool,
    args: Sequence[str],
    conn: ConnInfo,
    *,
    input_bytes: bytes | None = None,
    timeout: float = 600.0,
    cancel: threading.Event | None = None,
) -> bytes:
    """Run ``tool`` to completion and return its stdout."""
    with tool_environment(conn) as env:
        try:
            result = subprocess.run(
                [str(tool.path), *args],
                input=input_bytes,
                capture_output=True,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ToolError(f"{tool.name} timed out after {timeout:.0f} s") from exc
    if cancel is not None and cancel.is_set():
        raise CancelledError(f"{tool.name} was cancelled")
    if result.returncode != 0:
        detail = _redact(result.stderr.decode("utf-8", "replace").strip(), conn)
        raise ToolError(
            f"{tool.name} failed (exit {result.returncode}): {detail or 'no error output'}"
        )
    return result.stdout
