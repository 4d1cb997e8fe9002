"""Characters to ids and back, and the batches for training (reading files: charrnn.reading).

`Vocab` maps each distinct character to an id; ids are ordered by code point so the same text
always gives the same ids. `BatchStream` serves the (x, y) windows of truncated backpropagation through time, and
`eval_batches` walks a held-out split so that every target is scored exactly once.

Code points travel as uint32 arrays (the UTF-32 encoding of the text) so that encoding and
decoding are a handful of vectorised NumPy calls, not a Python loop over characters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from charrnn.errors import CharRNNError, UsageError

__all__ = ["Vocab", "split", "BatchStream", "eval_batches"]

# Largest vocabulary whose ids still fit in uint16 (the contract switches to uint32 above it).
_UINT16_VOCAB = 65535
_ON_UNKNOWN = ("error", "unk", "drop")
# How many unknown characters an error message lists before it stops.
_MAX_LISTED = 20
_REPLACEMENT = "\ufffd"
# The one-byte id that marks an ASCII character outside the vocabulary in Vocab's fast path.
_NOT_IN_VOCAB = 255
_NOT_IN_VOCAB_BYTE = bytes([_NOT_IN_VOCAB])
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


def code_point_counts(text: str) -> np.ndarray:
    """(max code point + 1,) int64: how often each code point occurs in text."""
    if text.isascii():  # a byte per character: a quarter of the UTF-32 code points' traffic
        return np.bincount(np.frombuffer(text.encode("ascii"), dtype=np.uint8))
    return np.bincount(_code_points(text))


def add_counts(total: np.ndarray, more: np.ndarray) -> np.ndarray:
    """Counts of two texts together (arrays of either length, as code_point_counts gives)."""
    if len(more) > len(total):
        total, more = more, total
    total = total.copy()
    total[: len(more)] += more
    return total


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
        # ASCII text through bytes.translate: one C pass from the text's bytes to one-byte ids
        # (_NOT_IN_VOCAB where unknown), several times faster than the code-point gather.
        self._ascii_table = None
        if len(chars) < _NOT_IN_VOCAB:
            table = np.full(256, _NOT_IN_VOCAB, dtype=np.uint8)
            low = cps < 128
            table[cps[low]] = ids[low]
            self._ascii_table = table.tobytes()

    @classmethod
    def build(cls, text: str, max_size: int | None = None) -> Vocab:
        """The vocabulary of `text`: its distinct characters sorted by code point.

        With max_size, if the text has more than max_size distinct characters, keep the
        max_size - 1 most frequent (ties go to the lower code point), sorted by code point,
        and append "<unk>" for the rest.
        """
        if not text:
            raise CharRNNError("cannot build a vocabulary from an empty text")
        return cls.from_counts(code_point_counts(text), max_size)

    @classmethod
    def from_counts(cls, counts: np.ndarray, max_size: int | None = None) -> Vocab:
        """`build` for a text known only by its counts: counts[cp] (C,) int is how often code
        point cp occurs (see code_point_counts; counts of several chunks add up)."""
        if max_size is not None and not _is_int(max_size, minimum=2):
            raise UsageError(f"max_size (data.max_vocab) must be an integer >= 2 or unset, got {max_size!r}")
        cps = np.flatnonzero(counts)
        if not len(cps):
            raise CharRNNError("cannot build a vocabulary from an empty text")
        if max_size is None or len(cps) <= max_size:
            return cls([chr(c) for c in cps])
        # lexsort sorts by the last key first: count descending, then code point ascending.
        keep = np.sort(cps[np.lexsort((cps, -counts[cps]))[: max_size - 1]])
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
        if self._ascii_table is not None and text.isascii():
            small = text.encode("ascii").translate(self._ascii_table)
            if _NOT_IN_VOCAB_BYTE not in small:
                return np.frombuffer(small, dtype=np.uint8).astype(self.dtype)
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
    only ever follows the real pairs of a row. Each window is gathered from ids when it is
    yielded, so a memory-mapped text is never copied whole.
    """
    ids = _check_ids(ids)
    B = _check_positive_int(batch_size, "batch_size")
    T = _check_positive_int(seq_len, "seq_len")
    n = len(ids) - 1
    if n < 1:
        raise CharRNNError(f"the validation text has {len(ids)} characters; scoring needs at least 2")
    return _eval_windows(ids, n, B, T)


def _eval_windows(ids: np.ndarray, n: int, B: int, T: int) -> Iterator[Masked]:
    L = -(-n // B)
    row_starts = np.arange(B, dtype=np.int64)[:, None] * L          # (B, 1)
    for start in range(0, L, T):
        pos = row_starts + np.arange(start, min(start + T, L))      # (B, t) index of each input
        mask = pos < n
        pos[~mask] = 0
        x = ids[pos].astype(np.int64)
        y = ids[pos + 1].astype(np.int64)
        x[~mask] = 0
        y[~mask] = 0
        yield x, y, mask


def id_counts(ids: np.ndarray, size: int) -> np.ndarray:
    """(size,) int64: how often each id occurs in ids (N,), read in blocks so that a
    memory-mapped text is never converted whole."""
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, len(ids), _COUNT_BLOCK):
        counts += np.bincount(ids[start : start + _COUNT_BLOCK], minlength=size)
    return counts


# ids per block of id_counts: 16M ids are 128 MB as the intp bincount converts them to.
_COUNT_BLOCK = 1 << 24
