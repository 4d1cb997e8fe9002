"""Reading text files as a stream of decoded chunks, so a corpus of gigabytes never has to be in
memory as one str (or one bytes object) at a time.

The rules are those of a whole-file read: decoding is strict, a leading byte-order mark is
dropped, CRLF line ends become LF, NUL bytes mean a binary file, and an error names the byte
offset where it happened (in the decompressed data for .gz). A multi-byte character or a CRLF pair
may straddle two chunks; the incremental decoder and a held-back "\\r" join them again.
"""

from __future__ import annotations

import codecs
import gzip
import os
import zlib
from collections.abc import Callable, Iterator, Sequence

from charrnn.errors import CharRNNError, UsageError

__all__ = ["CHUNK_BYTES", "check_encoding", "text_chunks", "read_text", "read_texts", "as_paths"]

# Bytes read per chunk: large enough that the per-chunk NumPy calls cost nothing, small enough
# that the working set of one chunk (its str, UTF-32 code points and ids) stays near 100 MB.
CHUNK_BYTES = 8 << 20


def check_encoding(encoding: str) -> str:
    """The codec's canonical name; UsageError for an unknown name or a bytes-to-bytes codec."""
    try:
        codec = codecs.lookup(encoding).name
        "a".encode(codec)  # a LookupError for bytes-to-bytes codecs such as base64
    except UnicodeError:
        pass  # a text codec that cannot represent "a" is still a text codec
    except LookupError:
        raise UsageError(
            f"{encoding!r} is not a text encoding Python knows (--encoding / data.encoding); "
            "try e.g. utf-8 or latin-1"
        ) from None
    return codec


def _is_wide(codec: str) -> bool:
    """True for codecs such as UTF-16/32 whose ordinary text contains NUL bytes."""
    return b"\x00" in "a".encode(codec)


def _open(path: str):
    if not os.path.exists(path):
        raise CharRNNError(f"{path}: no such file; check the path")
    if os.path.isdir(path):
        raise CharRNNError(f"{path}: is a directory, expected a text file; name a file inside it")
    try:
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as e:
        raise CharRNNError(f"{path}: cannot read ({e.strerror or e})") from e


def _byte_chunks(path: str, chunk_bytes: int) -> Iterator[tuple[bytes, int]]:
    """The (decompressed) bytes of path, chunk_bytes at a time, each with how far into the file
    (as stored, compressed or not) the reading has got; one-line errors."""
    with _open(path) as fh:
        raw = getattr(fh, "fileobj", fh)
        while True:
            try:
                data = fh.read(chunk_bytes)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise CharRNNError(f"{path}: not a valid gzip file ({e}); recompress it or drop the "
                                   ".gz suffix") from e
            except OSError as e:
                raise CharRNNError(f"{path}: cannot read ({e.strerror or e})") from e
            if not data:
                return
            yield data, raw.tell()


def text_chunks(path: str | os.PathLike, encoding: str = "utf-8", chunk_bytes: int | None = None,
                on_progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """The text of one file (plain, or gzip-compressed when the name ends in .gz) in pieces whose
    concatenation is what `read_text` returns. Each piece comes from at most chunk_bytes bytes
    (default CHUNK_BYTES).
    on_progress(n) is called after each piece with the bytes of the file (as stored) read so far.

    Raises CharRNNError for a missing file, a directory, an empty file, a binary file (NUL bytes)
    or undecodable bytes (with the byte offset); UsageError for an unknown encoding.
    """
    path = os.fspath(path)
    codec = check_encoding(encoding)
    wide = _is_wide(codec)
    # codecs whose "\r" is the byte 0x0D and no other character's byte is
    byte_transparent = codec in ("utf-8", "ascii", "iso8859-1", "cp1252")
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    offset = 0            # bytes handed to the decoder so far
    held = ""             # a trailing "\r" kept back until we know whether "\n" follows
    at_start = True       # no text yet: a byte-order mark is still to be dropped
    produced = False

    def decode(data: bytes, final: bool) -> str:
        pending = len(decoder.getstate()[0])  # bytes of a character begun in the previous chunk
        try:
            return decoder.decode(data, final)
        except UnicodeDecodeError as e:
            where = " of the decompressed data" if path.endswith(".gz") else ""
            name = "UTF-8" if codec == "utf-8" else codec
            raise CharRNNError(
                f"{path}: not valid {name} at byte offset {offset - pending + e.start}{where} "
                "(use --encoding / data.encoding for other codecs)"
            ) from None

    for data, position in _byte_chunks(path, chunk_bytes or CHUNK_BYTES):
        nul = -1 if wide else data.find(b"\x00")
        if nul >= 0:
            raise CharRNNError(f"{path}: looks like a binary file (NUL byte at offset {offset + nul}), "
                               "expected text; for UTF-16/32 text pass the encoding "
                               "(--encoding / data.encoding)")
        text = decode(data, final=False)
        offset += len(data)
        if wide and "\x00" in text:
            raise CharRNNError(f"{path}: looks like a binary file (NUL character), expected text")
        if at_start and text:
            text, at_start = text.removeprefix("\ufeff"), False
        joined = bool(held)
        if joined:
            text = held + text
        held = "\r" if text.endswith("\r") else ""
        if held:
            text = text[:-1]
        if joined or not byte_transparent or b"\r" in data:  # a memchr, cheaper than a str search
            text = text.replace("\r\n", "\n")
        if text:
            produced = True
            yield text
        if on_progress:
            on_progress(position)
    if offset == 0:
        raise CharRNNError(f"{path}: the file is empty; give a file that holds text")
    tail = decode(b"", final=True)
    if at_start:
        tail = tail.removeprefix("\ufeff")
    tail = (held + tail).replace("\r\n", "\n")
    if tail:
        produced = True
        yield tail
    if not produced:
        raise CharRNNError(f"{path}: the file holds no text (only a byte-order mark)")


def as_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """data.path / data.val_path as a non-empty list of path strings."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise UsageError("no training text given: name at least one file (data.path)")
    return [os.fspath(p) for p in paths]


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """Read one text file whole (see `text_chunks` for the rules and errors)."""
    return "".join(text_chunks(path, encoding))


def read_texts(paths: str | os.PathLike | Sequence[str | os.PathLike], encoding: str = "utf-8") -> str:
    """Read one path or a list of paths with `read_text` and concatenate the texts in order.

    Nothing is inserted between files: end each file with a newline if lines must not join.
    """
    return "".join(read_text(p, encoding) for p in as_paths(paths))
