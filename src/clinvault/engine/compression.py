"""Compression of bundle parts: zstd (the default) and gzip.

Every part of a bundle must stay readable with the standard command-line tools (``zstd -d``,
``gzip -d``), so this module only writes standard zstd frames and gzip members, and reads any
sequence of them (``zstd`` and ``gzip`` both accept concatenated frames or members).

Writers hash while they compress: the manifest records the SHA-256 of the stored bytes and
of the original stream, and nothing may be read twice. Readers hand out output in pieces of
at most a few MiB however well the data compressed, check every frame's checksum, and notice
a stream cut short, which ``zstandard``'s own readers silently accept.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, NamedTuple, Protocol, Self

import zstandard

from clinvault.errors import IntegrityError, InvalidInputError

Codec = Literal["zstd", "gzip"]
CODECS: Final[tuple[Codec, ...]] = ("zstd", "gzip")
DEFAULT_LEVELS: Final[Mapping[str, int]] = {"zstd": 3, "gzip": 6}
LEVEL_RANGES: Final[Mapping[str, tuple[int, int]]] = {"zstd": (1, 19), "gzip": (1, 9)}
BytesLike = bytes | bytearray | memoryview
_SUFFIXES: Final[Mapping[str, str]] = {"zstd": ".zst", "gzip": ".gz"}

_GZIP_WBITS: Final = 31  # zlib window of 2**15 bytes, with a gzip header and trailer
_COPY_SIZE: Final = 1 << 20
# One decompression step yields at most this much (zstd: 32 blocks of at most 128 KiB).
_MAX_STEP_OUTPUT: Final = 4 << 20
_ZSTD_BLOCKS_PER_STEP: Final = 32
_ZSTD_MAGIC: Final = 0xFD2FB528
_ZSTD_MAGIC_BYTES: Final = _ZSTD_MAGIC.to_bytes(4, "little")
_ZSTD_SKIPPABLE: Final = range(0x184D2A50, 0x184D2A60)


def check_codec(codec: str) -> Codec:
    """Return ``codec`` as a ``Codec``, refusing names ClinVault does not write."""
    if codec == "zstd":
        return "zstd"
    if codec == "gzip":
        return "gzip"
    raise InvalidInputError(f"unknown compression codec {codec!r}: use zstd or gzip")


def resolve_level(codec: str, level: int | None) -> int:
    """The level to use: ``level`` when it is in the codec's range, its default when None."""
    name = check_codec(codec)
    if level is None:
        return DEFAULT_LEVELS[name]
    low, high = LEVEL_RANGES[name]
    if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
        raise InvalidInputError(
            f"{name} compression level must be an integer from {low} to {high}, not {level!r}"
        )
    return level


def suffix(codec: str) -> str:
    """File name suffix of a part compressed with ``codec``: ``.zst`` or ``.gz``."""
    return _SUFFIXES[check_codec(codec)]


class Sink(Protocol):
    """Where compressed bytes go: a storage ``ObjectWriter``, an open file, a socket wrapper."""

    def write(self, data: bytes, /) -> object: ...


class Source(Protocol):
    """Where raw bytes come from: a pipe, an open file."""

    def read(self, size: int, /) -> bytes: ...


# --- compressing -------------------------------------------------------------------------

_contexts = threading.local()


def _zstd_context(level: int) -> zstandard.ZstdCompressor:
    """This thread's single-threaded zstd context for ``level`` (contexts are not shareable)."""
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_contexts, "zstd", None)
    if cache is None:
        cache = _contexts.zstd = {}
    context = cache.get(level)
    if context is None:
        context = cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=True)
    return context


def compress_frame(data: bytes, codec: Codec, level: int) -> bytes:
    """``data`` as one independent zstd frame or gzip member.

    Safe to call from many threads at once; both libraries release the GIL while they work,
    which is what lets the archive writer compress frames in parallel.
    """
    return b"".join(compress_frame_pieces(data, codec, level))


def compress_frame_pieces(data: bytes, codec: Codec, level: int) -> tuple[bytes, ...]:
    """``compress_frame``'s frame as the pieces the compressor returned, in order (joining
    them would copy the frame once more)."""
    if codec == "zstd":
        # Through the streaming interface, size not announced: zstd's one-shot call (1.5.7)
        # spends about twice the time on the same frame for a result 0.1% smaller, and an
        # announced size widens the window, and the memory of each context, to the frame.
        encoder = _zstd_context(level).compressobj()
        return encoder.compress(data), encoder.flush()
    return (zlib.compress(data, level, wbits=_GZIP_WBITS),)


# zstd's match-finding strategies, by the number zstd gives them (zstandard.STRATEGY_*).
_ZSTD_STRATEGIES: Final = (
    "fast", "dfast", "greedy", "lazy", "lazy2", "btlazy2", "btopt", "btultra", "btultra2"
)  # fmt: skip
_TABLE_MIN_MATCH: Final = 4
_TABLE_SEARCH_LOG: Final = 2


def table_data_parameters(level: int, *, threads: int = 0) -> zstandard.ZstdCompressionParameters:
    """zstd parameters for a database dump at ``level``: the level's own, with a search at
    least as thorough as zstd's ``lazy2`` from level 3 up.

    A dump is mostly ``COPY`` text: rows of numbers, codes and timestamps, where a match is
    short and the best one often starts a byte or two after the first. zstd's presets up to
    level 7 take the first match they find (and ignore those under 5 bytes); lazy2 looks two
    positions ahead, and with 4-byte matches and four candidates per position it compresses
    a dump like deflate's lazy matching does, at half its CPU. Levels 1 and 2, asked for
    speed, and levels whose strategy is stronger than lazy2, keep zstd's parameters.
    """
    preset = zstandard.ZstdCompressionParameters.from_level(level)
    search: dict[str, int] = {}
    if level >= 3 and preset.strategy <= zstandard.STRATEGY_LAZY2:
        search = {
            "strategy": zstandard.STRATEGY_LAZY2,
            "min_match": min(preset.min_match, _TABLE_MIN_MATCH),
            "search_log": max(preset.search_log, _TABLE_SEARCH_LOG),
        }
    return zstandard.ZstdCompressionParameters.from_level(
        level, threads=threads, write_checksum=1, **search
    )


def describe_parameters(params: zstandard.ZstdCompressionParameters) -> dict[str, int | str]:
    """The parameters that shape a zstd stream's size, as the manifest records them."""
    return {
        "strategy": _ZSTD_STRATEGIES[params.strategy - 1],
        "window_log": params.window_log,
        "hash_log": params.hash_log,
        "chain_log": params.chain_log,
        "search_log": params.search_log,
        "min_match": params.min_match,
        "target_length": params.target_length,
    }


class FrameEncoder:
    """One zstd frame or gzip member compressed piece by piece, for data too big to hold.

    With ``threads`` > 0 zstd compresses the frame on that many worker threads of its own;
    gzip has no such mode and always works in the calling thread. With ``table_data``, zstd
    uses ``table_data_parameters``; ``parameters`` then says which (None otherwise).
    """

    def __init__(
        self, codec: Codec, level: int, *, threads: int = 0, table_data: bool = False
    ) -> None:
        level = resolve_level(codec, level)
        self._compress: Callable[[BytesLike], bytes]
        self._finish: Callable[[], bytes]
        self.parameters: dict[str, int | str] | None = None
        if check_codec(codec) == "zstd":
            if table_data:
                params = table_data_parameters(level, threads=threads)
                self.parameters = describe_parameters(params)
                context = zstandard.ZstdCompressor(compression_params=params)
            else:
                context = zstandard.ZstdCompressor(
                    level=level, threads=threads, write_checksum=True
                )
            zstd_obj = context.compressobj()
            self._compress = zstd_obj.compress
            self._finish = lambda: zstd_obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
        else:
            zlib_obj = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
            self._compress = zlib_obj.compress
            self._finish = zlib_obj.flush

    def compress(self, data: BytesLike) -> bytes:
        """Feed ``data``; returns whatever compressed output is ready (often nothing)."""
        return self._compress(data)

    def finish(self) -> bytes:
        """End the frame; returns the rest of the compressed output."""
        return self._finish()


@dataclass(frozen=True, slots=True)
class StreamResult:
    size: int  # raw bytes in
    compressed_size: int  # compressed bytes out
    sha256: str  # of the compressed output, hex
    raw_sha256: str  # of the raw input, hex
    parameters: dict[str, int | str] | None = None  # zstd's, where chosen for table data


class StreamCompressor:
    """Compresses one stream into ``sink`` in a single pass, counting and hashing both sides.

    Used for the database dump: ``pg_dump`` output goes in, the stored part comes out, and the
    manifest's sizes and hashes are known the moment the stream ends. zstd writes a single
    frame on ``threads`` worker threads; gzip writes a single member. Memory stays bounded:
    nothing is kept beyond zstd's own job buffers.
    """

    def __init__(
        self,
        sink: Sink,
        codec: Codec = "zstd",
        level: int | None = None,
        *,
        threads: int = 2,
        table_data: bool = False,
    ) -> None:
        if threads < 0:
            raise InvalidInputError(f"compression threads must not be negative, not {threads}")
        self._sink = sink
        self._encoder = FrameEncoder(
            codec, resolve_level(codec, level), threads=threads, table_data=table_data
        )
        self._raw_hash = hashlib.sha256()
        self._out_hash = hashlib.sha256()
        self._size = 0
        self._compressed_size = 0
        self._open = True
        self._result: StreamResult | None = None

    def write(self, data: BytesLike) -> int:
        """Compress ``data``; returns its length, like a file's ``write``."""
        if not self._open:
            raise ValueError("write to a closed StreamCompressor")
        size = memoryview(data).nbytes
        self._raw_hash.update(data)
        self._size += size
        self._emit(self._encoder.compress(data))
        return size

    def copy_from(self, source: Source, chunk_size: int = _COPY_SIZE) -> int:
        """Compress everything ``source`` yields until its end; returns the bytes copied."""
        copied = 0
        while chunk := source.read(chunk_size):
            copied += self.write(chunk)
        return copied

    def close(self) -> StreamResult:
        """End the stream and return its sizes and hashes; closing twice is harmless."""
        if self._result is None:
            if not self._open:
                raise ValueError("the stream was abandoned after an error")
            self._emit(self._encoder.finish())
            self._open = False
            self._result = StreamResult(
                size=self._size,
                compressed_size=self._compressed_size,
                sha256=self._out_hash.hexdigest(),
                raw_sha256=self._raw_hash.hexdigest(),
                parameters=self._encoder.parameters,
            )
        return self._result

    @property
    def result(self) -> StreamResult:
        """Sizes and hashes, once the stream is closed."""
        if self._result is None:
            raise ValueError("the stream is not closed yet")
        return self._result

    def _emit(self, out: bytes) -> None:
        if out:
            self._out_hash.update(out)
            self._compressed_size += len(out)
            self._sink.write(out)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Finish the stream on success; on an error leave it unfinished (the part is void)."""
        if exc_type is None:
            self.close()
        else:
            self._open = False


# --- decompressing -----------------------------------------------------------------------


class FrameStart(NamedTuple):
    """Where one frame (zstd) or member (gzip) begins, in compressed and in raw bytes."""

    compressed_offset: int
    raw_offset: int


class _Decoder(Protocol):
    frame_starts: list[FrameStart]
    raw_offset: int
    compressed_offset: int

    def feed(self, data: bytes) -> Iterator[bytes]: ...

    def finish(self) -> None: ...


class _ZstdDecoder:
    """Decodes a sequence of zstd frames, walking their block headers as it goes.

    Walking the blocks is what bounds memory (a block never decodes to more than 128 KiB, so
    feeding a few blocks at a time bounds every step) and what tells a complete stream from
    one cut short at a frame's edge, which the library cannot tell.
    """

    def __init__(self) -> None:
        self._context = zstandard.ZstdDecompressor()
        self._buf = bytearray()  # input not yet handed to the library
        self._scan = 0  # bytes of _buf already walked and ready to hand over
        self._frame: zstandard.ZstdDecompressionObj | None = None
        self._checksum = False
        self._skip = 0  # bytes of a skippable frame still to drop
        self.frame_starts: list[FrameStart] = []
        self.raw_offset = 0
        self.compressed_offset = 0  # offset of _buf[0] in the compressed stream

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buf += data
        while True:
            if self._skip:
                self._drop_skippable()
                if self._skip:
                    return
            if self._frame is None:
                started = self._start_frame()
                if started is None:
                    return
                if not started:
                    continue
            advanced, frame_done = self._walk_blocks()
            if not advanced:
                return
            out = self._decode(self._scan)
            if out:
                yield out
            if frame_done:
                self._end_frame()

    def finish(self) -> None:
        head = bytes(self._buf[:4])
        if (
            self._frame is None
            and not self._skip
            and head
            and not _ZSTD_MAGIC_BYTES.startswith(head)
        ):
            raise IntegrityError(
                f"zstd data ends with {len(self._buf)} bytes that are not a zstd frame "
                f"(compressed byte {self.compressed_offset})"
            )
        if self._frame is not None or self._skip or self._buf:
            raise IntegrityError(
                f"zstd data truncated: the stream ends inside a frame "
                f"(compressed byte {self.compressed_offset + len(self._buf)})"
            )
        if not self.frame_starts:
            raise IntegrityError("zstd data empty: no frame at all")

    def _drop_skippable(self) -> None:
        dropped = min(self._skip, len(self._buf))
        del self._buf[:dropped]
        self.compressed_offset += dropped
        self._skip -= dropped

    def _start_frame(self) -> bool | None:
        """Parse a frame header: True for a data frame, False for a skippable one, None when
        more input is needed."""
        buf = self._buf
        if len(buf) < 5:
            return None
        magic = int.from_bytes(buf[:4], "little")
        if magic in _ZSTD_SKIPPABLE:
            if len(buf) < 8:
                return None
            self._skip = 8 + int.from_bytes(buf[4:8], "little")
            return False
        if magic != _ZSTD_MAGIC:
            raise IntegrityError(f"not zstd data at compressed byte {self.compressed_offset}")
        descriptor = buf[4]
        if descriptor & 0x08:
            raise IntegrityError(f"corrupt zstd frame header at byte {self.compressed_offset}")
        single_segment = bool(descriptor & 0x20)
        content_size_bytes = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
        header_size = 5 + (not single_segment) + (0, 1, 2, 4)[descriptor & 3] + content_size_bytes
        if len(buf) < header_size:
            return None
        self._checksum = bool(descriptor & 0x04)
        self._frame = self._context.decompressobj()
        self._scan = header_size
        self.frame_starts.append(FrameStart(self.compressed_offset, self.raw_offset))
        return True

    def _walk_blocks(self) -> tuple[bool, bool]:
        """Walk whole blocks past ``_scan``: (any walked, the frame's last block walked)."""
        buf, pos = self._buf, self._scan
        for _ in range(_ZSTD_BLOCKS_PER_STEP):
            if len(buf) < pos + 3:
                break
            header = int.from_bytes(buf[pos : pos + 3], "little")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                raise IntegrityError(
                    f"corrupt zstd block at compressed byte {self.compressed_offset + pos}"
                )
            end = pos + 3 + (1 if kind == 1 else size) + (4 if last and self._checksum else 0)
            if len(buf) < end:
                break
            pos = end
            if last:
                self._scan = pos
                return True, True
        advanced = pos > self._scan
        self._scan = pos
        return advanced, False

    def _decode(self, count: int) -> bytes:
        assert self._frame is not None
        with memoryview(self._buf) as view:
            piece = bytes(view[:count])
        try:
            out = self._frame.decompress(piece)
        except zstandard.ZstdError as exc:
            raise IntegrityError(
                f"corrupt zstd data in the frame at compressed byte "
                f"{self.frame_starts[-1].compressed_offset}: {exc}"
            ) from exc
        del self._buf[:count]
        self._scan -= count
        self.compressed_offset += count
        self.raw_offset += len(out)
        return out

    def _end_frame(self) -> None:
        assert self._frame is not None
        if not self._frame.eof:
            raise IntegrityError(
                f"corrupt zstd frame at compressed byte {self.frame_starts[-1].compressed_offset}:"
                " its blocks end but the frame does not"
            )
        self._frame = None


class _GzipDecoder:
    """Decodes a sequence of gzip members; zlib itself checks each member's CRC and length."""

    def __init__(self) -> None:
        self._member: zlib._Decompress | None = None
        self.frame_starts: list[FrameStart] = []
        self.raw_offset = 0
        self.compressed_offset = 0  # offset of the next byte not yet handed to zlib

    def feed(self, data: bytes) -> Iterator[bytes]:
        pending = bytes(data)
        while pending:
            if self._member is None:
                self._member = zlib.decompressobj(_GZIP_WBITS)
                self.frame_starts.append(FrameStart(self.compressed_offset, self.raw_offset))
            pending = yield from self._inflate(self._member, pending)

    def _inflate(self, member: zlib._Decompress, pending: bytes) -> Generator[bytes, None, bytes]:
        """Inflate ``pending`` in bounded steps; returns input left over past the member's end."""
        while True:
            try:
                out = member.decompress(pending, _MAX_STEP_OUTPUT)
            except zlib.error as exc:
                raise IntegrityError(
                    f"corrupt gzip data in the member at compressed byte "
                    f"{self.frame_starts[-1].compressed_offset}: {exc}"
                ) from exc
            rest = member.unused_data if member.eof else member.unconsumed_tail
            self.compressed_offset += len(pending) - len(rest)
            self.raw_offset += len(out)
            if out:
                yield out
            pending = rest
            if member.eof:
                self._member = None
                return pending
            if not pending and len(out) < _MAX_STEP_OUTPUT:
                return b""

    def finish(self) -> None:
        if self._member is not None:
            raise IntegrityError(
                f"gzip data truncated: the stream ends inside a member "
                f"(compressed byte {self.compressed_offset})"
            )
        if not self.frame_starts:
            raise IntegrityError("gzip data empty: no member at all")


class StreamDecompressor:
    """Decompresses a stream of zstd frames or gzip members fed chunk by chunk.

    Each ``feed`` yields pieces of at most a few MiB and must be consumed before the next
    call; ``finish`` then tells a complete stream from a truncated one. ``frame_starts`` lists
    where every frame began, which the archive verifier checks its index against.
    """

    def __init__(self, codec: Codec) -> None:
        self._decoder: _Decoder = _ZstdDecoder() if check_codec(codec) == "zstd" else _GzipDecoder()

    def feed(self, data: bytes) -> Iterator[bytes]:
        return self._decoder.feed(data)

    def finish(self) -> None:
        """Raise ``IntegrityError`` unless the input ended exactly at a frame's end."""
        self._decoder.finish()

    @property
    def frame_starts(self) -> list[FrameStart]:
        return self._decoder.frame_starts

    @property
    def size(self) -> int:
        """Raw bytes produced so far."""
        return self._decoder.raw_offset

    @property
    def compressed_size(self) -> int:
        """Compressed bytes decoded so far."""
        return self._decoder.compressed_offset


def decompress_chunks(chunks: Iterable[bytes], codec: Codec) -> Iterator[bytes]:
    """The raw bytes of a compressed stream given as chunks; ``IntegrityError`` when corrupt."""
    decoder = StreamDecompressor(codec)
    for chunk in chunks:
        yield from decoder.feed(chunk)
    decoder.finish()
