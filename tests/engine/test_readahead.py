"""Reading ahead on a thread: every byte in order, errors in the consumer, clean stops."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clinvault.engine.readahead import enlarge_pipe, read_pipe, run_ahead


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "clinvault-run-ahead"}


def _wait_for_no_reader(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _threads()


def test_read_pipe_yields_every_byte_of_a_slow_writer_in_order(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    # dd writes 4 KiB at a time with pauses, like pg_dump: the reader naps between gulps.
    script = (
        f"for i in 1 2 3; do dd if='{source}' bs=4096 skip=$(( (i - 1) * 256 )) count=256"
        " status=none; sleep 0.05; done; "
        f"dd if='{source}' bs=4096 skip=768 status=none"
    )
    proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    chunks = list(read_pipe(proc.stdout, 1 << 20, 4))
    proc.wait()

    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= 1 << 20 for chunk in chunks)
    _wait_for_no_reader()


def test_enlarge_pipe_reports_the_size_and_zero_for_a_file(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        assert enlarge_pipe(read_end) >= 64 << 10
    finally:
        os.close(read_end)
        os.close(write_end)
    with (tmp_path / "plain").open("wb") as handle:
        assert enlarge_pipe(handle.fileno()) == 0


def test_run_ahead_raises_the_source_error_in_the_consumer() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("the source broke")

    seen: list[int] = []
    with pytest.raises(ValueError, match="the source broke"):
        for item in run_ahead(source(), 1):
            seen.append(item)
    assert seen == [1, 2]
    _wait_for_no_reader()


def test_a_consumer_that_stops_early_stops_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            count = 0
            while True:
                count += 1
                yield count
        finally:
            closed.set()

    items = run_ahead(endless(), 2)
    assert [next(items) for _ in range(5)] == [1, 2, 3, 4, 5]
    items.close()

    assert closed.wait(5)
    _wait_for_no_reader()


def test_closing_the_stream_while_the_reader_runs_is_safe() -> None:
    proc = subprocess.Popen(["bash", "-c", "yes | head -c 2000000"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    chunks = read_pipe(proc.stdout, 64 << 10, 2)
    first = next(chunks)
    proc.stdout.close()  # the reader has its own descriptor
    rest = b"".join(chunks)
    proc.wait()

    assert len(first) + len(rest) == 2_000_000
    _wait_for_no_reader()
