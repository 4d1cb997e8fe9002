"""Text in, character ids out: reading corpora, the vocabulary, and the batches for training.

A corpus is one or more UTF-8 text files (optionally gzip-compressed). `Vocab` maps each distinct
character to an id; ids are ordered by code point so the same text always gives the same ids.
`BatchStream` serves the (x, y) windows of truncated backpropagation through time, and
`eval_batches` walks a held-out split so that every target is scored exactly once.

Code points travel as uint32 arrays (the UTF-32 encoding of the text) so that encoding and
decoding are a handful of vectorised NumPy calls, not a Python loop over characters.
"""

from __future__ import annotations

import codecs
import gzip
import os
import zlib
from collections.abc import Iterator, Sequence

import numpy as np

from charrnn.errors import CharRNNError, UsageError

__all__ = ["read_text", "read_texts", "Vocab", "split", "BatchStream", "eval_batches"]

# Largest vocabulary whose ids still fit in uint16 (the contract switches to uint32 above it).
_UINT16_VOCAB = 65535
_ON_UNKNOWN = ("error", "unk", "drop")
# How many unknown characters an error message lists before it stops.
_MAX_LISTED = 20
_REPLACEMENT = "\ufffd"
# One evaluation window: x, y and mask, each (B, t).
Masked = tuple[np.ndarray, np.ndarray, np.ndarray]


def _code_points(text: str) -> np.ndarray:
    """Code points of `text` as a 1-D uint32 array of len(text).

    surrogatepass keeps lone surrogates (possible in a str built in memory) instead of failing.
    """
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _from_code_points(cps: np.ndarray) -> str:
    """Inverse of `_code_points`: a 1-D uint32 array back to a str."""
    return np.ascontiguousarray(cps, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def _read_bytes(path: str) -> bytes:
    """All bytes of a file, gunzipped when its name ends in .gz."""
    if not os.path.exists(path):
        raise CharRNNError(f"{path}: no such file; check the path")
    if os.path.isdir(path):
        raise CharRNNError(f"{path}: is a directory, expected a text file; name a file inside it")
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise CharRNNError(f"{path}: not a valid gzip file ({e}); recompress it or drop the .gz suffix") \
            from e
    except OSError as e:
        raise CharRNNError(f"{path}: cannot read ({e.strerror or e})") from e


def _is_wide(encoding: str) -> bool:
    """True for codecs such as UTF-16/32 whose ordinary text contains NUL bytes."""
    return b"\x00" in "a".encode(encoding)


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """Read one text file (plain, or gzip-compressed when the name ends in .gz) into a str.

    Decoding is strict. A leading byte-order mark is dropped and CRLF line ends become LF.
    Raises CharRNNError for a missing file, a directory, an empty file, a binary file (NUL bytes)
    or undecodable bytes (the message gives the byte offset, in the decompressed data for .gz);
    UsageError for an unknown encoding name or a codec that is not a text encoding (base64).
    """
    path = os.fspath(path)
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
    data = _read_bytes(path)
    if not data:
        raise CharRNNError(f"{path}: the file is empty; give a file that holds text")
    wide = _is_wide(codec)
    # NUL bytes mean binary data, except in UTF-16/32 where they are part of ordinary text;
    # there a NUL character in the decoded text is the sign.
    nul = -1 if wide else data.find(b"\x00")
    if nul >= 0:
        raise CharRNNError(f"{path}: looks like a binary file (NUL byte at offset {nul}), expected text; "
                           "for UTF-16/32 text pass the encoding (--encoding / data.encoding)")
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as e:
        where = " of the decompressed data" if path.endswith(".gz") else ""
        name = "UTF-8" if codec == "utf-8" else codec
        raise CharRNNError(
            f"{path}: not valid {name} at byte offset {e.start}{where} "
            "(use --encoding / data.encoding for other codecs)"
        ) from None
    if wide and "\x00" in text:
        raise CharRNNError(f"{path}: looks like a binary file (NUL character), expected text")
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n")
    if not text:
        raise CharRNNError(f"{path}: the file holds no text (only a byte-order mark)")
    return text


def read_texts(paths: str | os.PathLike | Sequence[str | os.PathLike], encoding: str = "utf-8") -> str:
    """Read one path or a list of paths with `read_text` and concatenate the texts in order.

    Nothing is inserted between files: end each file with a newline if lines must not join.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise UsageError("no training text given: name at least one file (data.path)")
    return "".join(read_text(p, encoding) for p in paths)


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------


class Vocab:
    """Bijection between tokens and integer ids.

    Tokens are single characters, ordered by code point when built from text, plus the
    token "<unk>" as the last id when the vocabulary was capped. Ids are `dtype`: uint16, or
    uint32 when there are more than 65,535 tokens.
    """

    UNK = "<unk>"

    def __init__(self, chars: Sequence[str]):
        """Take the tokens in id order; validates them (see `from_json`)."""
        chars = list(chars)
        _check_tokens(chars)
        self.chars: list[str] = chars
        self.index: dict[str, int] = {c: i for i, c in enumerate(chars)}
        self.unk_id: int | None = self.index.get(self.UNK)
        self.dtype = np.dtype(np.uint16 if len(chars) <= _UINT16_VOCAB else np.uint32)
        # Dense code point -> id table (-1 = not in the vocabulary) for vectorised encode: one
        # gather per text. Its last entry stands for every code point above the largest known one.
        # Even a vocabulary reaching U+10FFFF costs only 4.5 MB.
        cps = np.array([ord(c) for c in chars if c != self.UNK], dtype=np.int64)
        ids = np.array([i for i, c in enumerate(chars) if c != self.UNK], dtype=np.int32)
        self._max_cp = int(cps.max(initial=-1))
        self._cp_to_id = np.full(self._max_cp + 2, -1, dtype=np.int32)
        self._cp_to_id[cps] = ids
        self._id_to_cp = np.array([ord(_REPLACEMENT if c == self.UNK else c) for c in chars], dtype=np.uint32)

    @classmethod
    def build(cls, text: str, max_size: int | None = None) -> Vocab:
        """The vocabulary of `text`: its distinct characters sorted by code point.

        With max_size, if the text has more than max_size distinct characters, keep the
        max_size - 1 most frequent (ties go to the lower code point), sorted by code point,
        and append "<unk>" for the rest.
        """
        if max_size is not None and not _is_int(max_size, minimum=2):
            raise UsageError(f"max_size (data.max_vocab) must be an integer >= 2 or unset, got {max_size!r}")
        if not text:
            raise CharRNNError("cannot build a vocabulary from an empty text")
        cps, counts = np.unique(_code_points(text), return_counts=True)
        if max_size is None or len(cps) <= max_size:
            return cls([chr(c) for c in cps])
        # lexsort sorts by the last key first: count descending, then code point ascending.
        keep = np.sort(cps[np.lexsort((cps, -counts))[: max_size - 1]])
        return cls([chr(c) for c in keep] + [cls.UNK])

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self.chars == other.chars

    __hash__ = None  # mutable lists inside; equality is by content

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, unk={self.unk_id is not None})"

    def _lookup(self, cps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For code points (N,) uint32: ids (N,) self.dtype (meaningless where unknown), known (N,) bool."""
        found = self._cp_to_id[np.minimum(cps, self._max_cp + 1)]
        return found.astype(self.dtype), found >= 0

    def encode(self, text: str, on_unknown: str = "error") -> np.ndarray:
        """Ids of the characters of `text`: 1-D array of len(text) (fewer with "drop"), self.dtype.

        on_unknown says what happens to characters not in the vocabulary: "error" raises
        CharRNNError listing them; "unk" maps them to "<unk>" (an error if there is none);
        "drop" leaves them out.
        """
        if on_unknown not in _ON_UNKNOWN:
            raise UsageError(f"on_unknown must be one of {', '.join(_ON_UNKNOWN)}, got {on_unknown!r}")
        cps = _code_points(text)
        ids, known = self._lookup(cps)
        if known.all():
            return ids
        if on_unknown == "drop":
            return ids[known]
        if on_unknown == "unk" and self.unk_id is not None:
            ids[~known] = self.unk_id
            return ids
        raise CharRNNError(self._unknown_message(np.unique(cps[~known]), on_unknown))

    def _unknown_message(self, unknown_cps: np.ndarray, on_unknown: str) -> str:
        listed = ", ".join(repr(chr(c)) for c in unknown_cps[:_MAX_LISTED])
        more = f" and {len(unknown_cps) - _MAX_LISTED} more" if len(unknown_cps) > _MAX_LISTED else ""
        if on_unknown == "unk":
            advice = "this vocabulary has no <unk>; use on_unknown 'drop' or rebuild the vocabulary"
        else:
            advice = "use on_unknown 'unk' or 'drop', or rebuild the vocabulary"
        return f"{len(unknown_cps)} character(s) not in the vocabulary: {listed}{more} ({advice})"

    def decode(self, ids: np.ndarray | Sequence[int]) -> str:
        """The text of ids (N,) int; "<unk>" decodes to U+FFFD."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise CharRNNError(f"decode expects a 1-D integer array of ids, got {ids.shape} {ids.dtype}")
        lo, hi = ids.min(), ids.max()
        if lo < 0 or hi >= len(self):
            bad = lo if lo < 0 else hi
            raise CharRNNError(f"id {int(bad)} is out of range for a vocabulary of {len(self)} tokens")
        return _from_code_points(self._id_to_cp[ids])

    def missing(self, text: str) -> list[str]:
        """Distinct characters of `text` not in the vocabulary, sorted by code point."""
        cps = np.unique(_code_points(text))
        _, known = self._lookup(cps)
        return [chr(c) for c in cps[~known]]

    def to_json(self) -> list[str]:
        """The tokens in id order, as a plain JSON-serialisable list of str."""
        return list(self.chars)

    @classmethod
    def from_json(cls, obj: object) -> Vocab:
        """Inverse of `to_json`; CharRNNError if `obj` is not a valid token list."""
        if not isinstance(obj, list):
            raise CharRNNError(f"malformed vocabulary: expected a list of str, got {type(obj).__name__}")
        return cls(obj)


def _check_tokens(chars: list) -> None:
    """Raise CharRNNError unless chars are distinct single characters, "<unk>" at most once and last."""
    if not chars:
        raise CharRNNError("malformed vocabulary: it is empty")
    for i, c in enumerate(chars):
        if not isinstance(c, str):
            raise CharRNNError(f"malformed vocabulary: entry {i} is {type(c).__name__}, expected a str")
        if c == Vocab.UNK:
            if i != len(chars) - 1:
                raise CharRNNError(f"malformed vocabulary: {Vocab.UNK} at entry {i}, it may only be last")
        elif len(c) != 1:
            raise CharRNNError(f"malformed vocabulary: entry {i} is {c!r}, expected a single character")
    if len(set(chars)) != len(chars):
        raise CharRNNError("malformed vocabulary: it lists a character twice")


# ---------------------------------------------------------------------------------------------
# Splits and batches
# ---------------------------------------------------------------------------------------------


def _is_int(value: object, minimum: int) -> bool:
    """True if value is an integer (not a bool) >= minimum."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def _check_positive_int(value: object, name: str) -> int:
    if not _is_int(value, minimum=1):
        raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_ids(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise CharRNNError(f"expected a 1-D integer array of ids, got shape {ids.shape} {ids.dtype}")
    return ids


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split ids (N,) into train (N - n_val,) and validation (n_val,) views, n_val = floor(N * val_fraction).

    The validation part is the contiguous tail, so neither part is cut into pieces. With
    val_fraction > 0 the tail must hold at least 2 ids (one input and one target).
    """
    ids = _check_ids(ids)
    is_number = isinstance(val_fraction, (int, float, np.integer, np.floating))
    if isinstance(val_fraction, bool) or not (is_number and 0.0 <= val_fraction < 1.0):
        raise UsageError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    n_val = int(len(ids) * float(val_fraction))
    if val_fraction > 0 and n_val < 2:
        raise CharRNNError(
            f"val_fraction {val_fraction} of {len(ids)} characters leaves fewer than 2 for validation; "
            "raise val_fraction, use more text, or set it to 0"
        )
    cut = len(ids) - n_val
    return ids[:cut], ids[cut:]


class BatchStream:
    """Windows for truncated BPTT: B parallel rows of the text, read T characters at a time.

    The text is cut into B contiguous rows of `rows` characters (the remainder is dropped) and
    row b of window k continues row b of window k - 1, so a caller carries the hidden state from
    one window to the next. Rows are never shuffled. Characters past windows_per_epoch * T in
    each row are not used in an epoch.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int):
        """ids: (N,) int, the encoded text. Raises CharRNNError if it is too short for one window."""
        ids = _check_ids(ids)
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self.seq_len = _check_positive_int(seq_len, "seq_len")
        B, T = self.batch_size, self.seq_len
        rows = max(len(ids) - 1, 0) // B
        self.windows_per_epoch: int = rows // T
        if self.windows_per_epoch == 0:
            raise CharRNNError(
                f"the training text has {len(ids)} characters but batch_size {B} x seq_len {T} needs at "
                f"least {B * T + 1}; use a smaller batch_size or seq_len, or more text"
            )
        self._x = ids[: B * rows].reshape(B, rows)
        # The target of x[b, j] is the next character of the text, which for the last column
        # of a row is the first character of the next row (or the one after the used text).
        self._y = ids[1 : B * rows + 1].reshape(B, rows)

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Window k in [0, windows_per_epoch): x, y of shape (B, T), int64, C-contiguous copies.

        y[b, t] is the character after x[b, t]; y[:, -1] is x[:, 0] of window k + 1.
        """
        if not (_is_int(k, minimum=0) and k < self.windows_per_epoch):
            raise CharRNNError(
                f"window {k!r} is out of range: this stream has {self.windows_per_epoch} windows per epoch"
            )
        cols = slice(k * self.seq_len, (k + 1) * self.seq_len)
        # int64 copies: the model indexes with them (NumPy would convert uint16 each time),
        # and callers may keep or modify them without touching the corpus.
        return (np.ascontiguousarray(self._x[:, cols], dtype=np.int64),
                np.ascontiguousarray(self._y[:, cols], dtype=np.int64))


def eval_batches(ids: np.ndarray, batch_size: int, seq_len: int) -> Iterator[Masked]:
    """Batches that score every target of ids (N,) exactly once, for a validation loss.

    The N - 1 (input, target) pairs are laid out as B contiguous rows of L = ceil((N-1)/B)
    pairs, the last row(s) padded at their end, and cut into windows of seq_len columns
    (the last window may be narrower). Yields, per window, x (B, t) int64, y (B, t) int64 and
    mask (B, t) bool with t <= seq_len; mask is False on padding (x = y = 0 there). Row b of a
    window continues row b of the previous one, so the hidden state can be carried; padding
    only ever follows the real pairs of a row.
    """
    ids = _check_ids(ids)
    B = _check_positive_int(batch_size, "batch_size")
    T = _check_positive_int(seq_len, "seq_len")
    n = len(ids) - 1
    if n < 1:
        raise CharRNNError(f"the validation text has {len(ids)} characters; scoring needs at least 2")
    L = -(-n // B)
    x = np.zeros(B * L, dtype=np.int64)
    y = np.zeros(B * L, dtype=np.int64)
    mask = np.zeros(B * L, dtype=bool)
    x[:n], y[:n], mask[:n] = ids[:-1], ids[1:], True
    x, y, mask = x.reshape(B, L), y.reshape(B, L), mask.reshape(B, L)
    return _windows(x, y, mask, T)


def _windows(x: np.ndarray, y: np.ndarray, mask: np.ndarray, T: int) -> Iterator[Masked]:
    """Column windows of width T (the last may be narrower) of (B, L) arrays, as contiguous copies."""
    for start in range(0, x.shape[1], T):
        cols = slice(start, start + T)
        yield (np.ascontiguousarray(x[:, cols]), np.ascontiguousarray(y[:, cols]),
               np.ascontiguousarray(mask[:, cols]))
