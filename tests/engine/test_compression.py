"""Compression of bundle parts: standard output, exact sizes and hashes, strict reading."""

from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import zlib

import pytest
import zstandard

from clinvault.engine.compression import (
    Codec,
    StreamCompressor,
    StreamDecompressor,
    compress_frame,
    decompress_chunks,
    resolve_level,
    suffix,
    table_data_parameters,
)
from clinvault.errors import IntegrityError, InvalidInputError

CODECS: list[Codec] = ["zstd", "gzip"]
CLI_DECOMPRESS = {"zstd": ["zstd", "-dc"], "gzip": ["gzip", "-dc"]}


def _sample() -> bytes:
    """Compressible text, incompressible bytes and a long run of zeros."""
    text = b"".join(b"STU-0001,SUBJ-%06d,visit,%d,13.2,g/dL\n" % (i, i % 7) for i in range(60_000))
    return text + os.urandom(1 << 20) + bytes(3 << 20)


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _compress(data: bytes, codec: Codec, level: int | None = None) -> bytes:
    out = io.BytesIO()
    with StreamCompressor(out, codec, level) as compressor:
        compressor.write(data)
    return out.getvalue()


def test_levels_default_and_range_are_enforced() -> None:
    assert resolve_level("zstd", None) == 3
    assert resolve_level("gzip", None) == 6
    assert resolve_level("zstd", 1) == 1
    assert resolve_level("zstd", 19) == 19
    assert resolve_level("gzip", 9) == 9
    for codec, level in [("zstd", 0), ("zstd", 20), ("gzip", 0), ("gzip", 10), ("zstd", True)]:
        with pytest.raises(InvalidInputError, match=r"from \d+ to \d+"):
            resolve_level(codec, level)
    with pytest.raises(InvalidInputError, match="unknown compression codec 'xz'"):
        resolve_level("xz", None)


def test_suffixes() -> None:
    assert suffix("zstd") == ".zst"
    assert suffix("gzip") == ".gz"
    with pytest.raises(InvalidInputError):
        suffix("bz2")


@pytest.mark.parametrize("codec", CODECS)
def test_stream_compressor_output_is_read_by_the_standard_tool(codec: Codec) -> None:
    data = _sample()
    out = io.BytesIO()
    with StreamCompressor(out, codec, threads=2) as compressor:
        for i, chunk in enumerate(_chunks(data, 300_001)):
            piece = memoryview(chunk) if i % 3 == 1 else bytearray(chunk) if i % 3 else chunk
            assert compressor.write(piece) == len(chunk)
    result = compressor.result
    stored = out.getvalue()

    decoded = subprocess.run(CLI_DECOMPRESS[codec], input=stored, capture_output=True, check=True)
    assert decoded.stdout == data
    assert result.size == len(data)
    assert result.compressed_size == len(stored) < len(data)
    assert result.sha256 == hashlib.sha256(stored).hexdigest()
    assert result.raw_sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("codec", CODECS)
def test_stream_compressor_level_changes_the_output(codec: Codec) -> None:
    rng = random.Random(7)
    words = [b"visit", b"subject", b"hemoglobin", b"normal", b"high", b"low", b"g/dL", b"mmol/L"]
    data = b" ".join(rng.choice(words) + b"%d" % rng.randrange(1000) for _ in range(200_000))
    fast, best = _compress(data, codec, 1), _compress(data, codec, 19 if codec == "zstd" else 9)
    assert len(best) < len(fast)
    assert b"".join(decompress_chunks([best], codec)) == data


def _copy_rows(count: int) -> bytes:
    """COPY text like a dump's: ids, codes, decimal values and repeated timestamps."""
    rng = random.Random(11)
    tests = [
        (b"HGB", b"g/dL", 12.0, 17.5),
        (b"NA", b"mmol/L", 135.0, 145.0),
        (b"K", b"mmol/L", 3.5, 5.1),
    ]
    rows = []
    for i in range(count):
        code, unit, low, high = tests[i % len(tests)]
        value = rng.uniform(low * 0.8, high * 1.2)
        stamp = b"2025-%02d-%02d %02d:%02d:00+00" % (
            1 + i // 9000 % 12,
            1 + i // 300 % 28,
            rng.randrange(24),
            rng.randrange(60),
        )
        flag = b"normal" if low <= value <= high else b"abnormal"
        rows.append(
            b"%d\t%d\t%s\tfinal\t%.3f\t%s\t%.3f\t%.3f\t%s\t%s\t%s\t%s\n"
            % (i + 1, 1000 + i // 20, code, value, unit, low, high, flag, stamp, stamp, stamp)
        )
    return b"".join(rows)


def test_table_data_parameters_search_lazily_from_level_3() -> None:
    for level in (1, 2, 13, 19):
        preset = zstandard.ZstdCompressionParameters.from_level(level)
        params = table_data_parameters(level)
        assert (params.strategy, params.min_match, params.search_log) == (
            preset.strategy,
            preset.min_match,
            preset.search_log,
        )
    for level in range(3, 13):
        preset = zstandard.ZstdCompressionParameters.from_level(level)
        params = table_data_parameters(level, threads=2)
        assert params.strategy == 5  # lazy2
        assert params.min_match == min(preset.min_match, 4)
        assert params.search_log == max(preset.search_log, 2)
        assert params.window_log == preset.window_log  # decompression memory unchanged
        assert params.threads == 2 and params.write_checksum == 1


@pytest.mark.parametrize("threads", [0, 2])
def test_table_data_stream_is_standard_zstd_and_smaller_on_copy_text(threads: int) -> None:
    data = _copy_rows(120_000)
    plain, tuned = io.BytesIO(), io.BytesIO()
    with StreamCompressor(plain, "zstd", 3, threads=threads) as compressor:
        compressor.write(data)
    assert compressor.result.parameters is None
    with StreamCompressor(tuned, "zstd", 3, threads=threads, table_data=True) as compressor:
        for chunk in _chunks(data, 1 << 20):
            compressor.write(chunk)
    result = compressor.result
    assert result.parameters is not None
    assert result.parameters["strategy"] == "lazy2" and result.parameters["min_match"] == 4
    decoded = subprocess.run(
        CLI_DECOMPRESS["zstd"], input=tuned.getvalue(), capture_output=True, check=True
    )
    assert decoded.stdout == data
    assert result.compressed_size == len(tuned.getvalue())
    assert len(tuned.getvalue()) < 0.95 * len(plain.getvalue())


def test_table_data_does_not_change_gzip() -> None:
    data = _copy_rows(5_000)
    plain, tuned = io.BytesIO(), io.BytesIO()
    with StreamCompressor(plain, "gzip", 6) as compressor:
        compressor.write(data)
    with StreamCompressor(tuned, "gzip", 6, table_data=True) as compressor:
        compressor.write(data)
    assert compressor.result.parameters is None
    assert tuned.getvalue() == plain.getvalue()


def test_stream_compressor_refuses_an_invalid_level() -> None:
    with pytest.raises(InvalidInputError, match="gzip compression level"):
        StreamCompressor(io.BytesIO(), "gzip", 12)
    with pytest.raises(InvalidInputError, match="zstd compression level"):
        StreamCompressor(io.BytesIO(), "zstd", 0)


def test_stream_compressor_copies_a_source_to_its_end() -> None:
    data = _sample()
    out = io.BytesIO()
    compressor = StreamCompressor(out, "zstd")
    assert compressor.copy_from(io.BytesIO(data), chunk_size=65_536) == len(data)
    result = compressor.close()
    assert compressor.close() is result
    assert b"".join(decompress_chunks([out.getvalue()], "zstd")) == data


@pytest.mark.parametrize("codec", CODECS)
def test_stream_abandoned_by_an_error_is_left_unfinished(codec: Codec) -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError), StreamCompressor(out, codec, threads=0) as compressor:
        compressor.write(_sample())
        raise RuntimeError("dump failed")
    with pytest.raises(ValueError, match="abandoned"):
        compressor.close()
    with pytest.raises(IntegrityError, match="truncated"):
        b"".join(decompress_chunks([out.getvalue()], codec))


@pytest.mark.parametrize("codec", CODECS)
def test_concatenated_frames_decode_as_one_stream(codec: Codec) -> None:
    first, second = _sample(), b"second part\n" * 1000
    tool = ["zstd", "-c", "-3"] if codec == "zstd" else ["gzip", "-c"]
    by_tool = subprocess.run(tool, input=second, capture_output=True, check=True).stdout
    stored = _compress(first, codec) + by_tool + compress_frame(b"third", codec, 3)

    decoder = StreamDecompressor(codec)
    pieces = [piece for chunk in _chunks(stored, 4093) for piece in decoder.feed(chunk)]
    decoder.finish()

    assert b"".join(pieces) == first + second + b"third"
    frame_two = len(_compress(first, codec))
    assert decoder.frame_starts == [
        (0, 0),
        (frame_two, len(first)),
        (frame_two + len(by_tool), len(first) + len(second)),
    ]
    assert decoder.size == len(first + second) + 5
    assert decoder.compressed_size == len(stored)


@pytest.mark.parametrize("codec", CODECS)
def test_decoded_pieces_stay_small_however_well_data_compressed(codec: Codec) -> None:
    zeros = bytes(256 << 20)
    stored = compress_frame(zeros, codec, 3)
    assert len(stored) * 200 < len(zeros)

    sizes = [len(piece) for piece in decompress_chunks([stored], codec)]

    assert sum(sizes) == len(zeros)
    assert max(sizes) <= 4 << 20


def test_zstd_skippable_frames_are_skipped() -> None:
    skippable = (0x184D2A50).to_bytes(4, "little") + (6).to_bytes(4, "little") + b"ignore"
    stored = skippable + compress_frame(b"payload", "zstd", 3)
    assert b"".join(decompress_chunks(_chunks(stored, 3), "zstd")) == b"payload"


@pytest.mark.parametrize("codec", CODECS)
def test_corrupt_data_is_detected(codec: Codec) -> None:
    stored = _compress(_sample(), codec)
    flipped = bytearray(stored)
    flipped[len(stored) // 3] ^= 0x40
    for bad in [bytes(flipped), stored[:-1], stored[: len(stored) // 2], stored + b"junk!", b""]:
        with pytest.raises(IntegrityError):
            b"".join(decompress_chunks(_chunks(bad, 65_536), codec))


def test_data_of_the_other_codec_is_refused() -> None:
    with pytest.raises(IntegrityError, match="not zstd data"):
        b"".join(decompress_chunks([zlib.compress(b"x" * 100, wbits=31)], "zstd"))
    with pytest.raises(IntegrityError, match="gzip"):
        b"".join(decompress_chunks([zstandard.ZstdCompressor().compress(b"x")], "gzip"))
