"""Reading a pipe ahead of its consumer, so the process writing it never waits on us.

A tool writing into a pipe stops as soon as the pipe's buffer (64 KiB by default) is full.
When the reader also compresses and hashes, every pause of the reader is a pause of the
tool, and the two run one after the other instead of side by side. ``read_pipe`` drains
the pipe on a thread of its own into a bounded queue (memory stays bounded).

It also reads in big gulps. A reader blocked on a pipe is woken by every write into it, and
``pg_dump`` writes a few KiB at a time: a gigabyte means a quarter of a million wake-ups,
which cost more CPU than the copying (measured: 5.7 CPU seconds against 3.1 for a 1 GB
dump). With the pipe enlarged to 1 MiB, the reader naps for 2 ms after a small read, so the
data arrives in pieces of a few hundred KiB while the writer still never finds the pipe
full (that would take 500 MB/s, and at such rates reads are big and nobody naps).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from typing import IO, Final, TypeVar

_F_SETPIPE_SZ: Final = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ: Final = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_PIPE_SIZE: Final = 1 << 20
_POLL: Final = 0.05
_NAP: Final = 0.002
_SMALL_READ: Final = 256 << 10

T = TypeVar("T")


def enlarge_pipe(fd: int, size: int = _PIPE_SIZE) -> int:
    """Ask for a bigger pipe buffer; returns the size it has (0 when it is not a pipe)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    try:
        return int(fcntl.fcntl(fd, _F_GETPIPE_SZ))
    except OSError:
        return 0


class _End:
    """Put on the queue when the source is exhausted or failed."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def run_ahead(source: Iterable[T], depth: int) -> Generator[T, None, None]:
    """The items of ``source``, produced on a thread of their own up to ``depth`` ahead.

    An error of the source is raised here, in the consumer. When the consumer stops early
    (an exception, a ``break``, ``close()``), the thread stops at its next item and closes
    the source.
    """
    items: queue.Queue[T | _End] = queue.Queue(depth)
    stopped = threading.Event()

    def put(item: T | _End) -> bool:
        while not stopped.is_set():
            try:
                items.put(item, timeout=_POLL)
            except queue.Full:
                continue
            return True
        return False

    def pump() -> None:
        iterator = iter(source)
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer
            put(_End(exc))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        put(_End())

    thread = threading.Thread(target=pump, name="clinvault-run-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stopped.set()


def read_pipe(stream: IO[bytes], chunk_size: int, depth: int) -> Generator[bytes, None, None]:
    """Chunks of the pipe ``stream`` (at most ``chunk_size`` bytes each) up to its end, read
    by a thread up to ``depth`` chunks ahead (see ``run_ahead``).

    ``stream`` must not have been read from before (its own buffer would be skipped). The
    thread reads a duplicate of the pipe's descriptor and closes it itself, so closing
    ``stream`` meanwhile is safe.
    """
    fd = os.dup(stream.fileno())
    nap = _NAP if enlarge_pipe(fd) >= _PIPE_SIZE else 0.0

    def chunks() -> Iterator[bytes]:
        try:
            while chunk := os.read(fd, chunk_size):
                yield chunk
                if nap and len(chunk) < _SMALL_READ:
                    time.sleep(nap)
        finally:
            os.close(fd)

    yield from run_ahead(chunks(), depth)
