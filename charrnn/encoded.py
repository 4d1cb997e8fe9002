"""A training corpus as encoded ids, built in two streaming passes and cached for the next run.

Pass 1 decodes the files chunk by chunk and adds up how often each character occurs, which
gives the vocabulary and the length; pass 2 decodes again and writes each chunk's ids into
place. Memory while loading is the working set of one chunk (charrnn.reading.CHUNK_BYTES), plus
the encoded array when there is no cache to write it to.

The cache (data.cache_dir, by default $XDG_CACHE_HOME/charrnn or ~/.cache/charrnn) holds one
directory per corpus:

    <key>/meta.json    the key's inputs, the vocabulary and its counts, the lengths and CRC-32
                       of the id files, and a SHA-256 of its own fields
    <key>/train.npy    ids of data.path, concatenated in order (N,) uint16 or uint32
    <key>/val.npy      ids of data.val_path, when there is one

The key is a SHA-256 over the cache format, the encoding, data.max_vocab and the bytes of every
file, so a changed file, encoding, max_vocab or format finds no entry rather than a stale one. A
later run memory-maps train.npy and val.npy after checking them against meta.json's CRCs: a
truncated or altered entry is rebuilt with a warning, never used. When the cache cannot be
written (read-only, full), the corpus is loaded without it, also with a warning. An entry is
written in a temporary directory and renamed into place, so a crash never leaves half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.config import Config
from charrnn.corpus import Vocab, add_counts, code_point_counts, id_counts, split
from charrnn.errors import CharRNNError
from charrnn.reading import as_paths, check_encoding, text_chunks

__all__ = ["Corpus", "Loaded", "load_corpus", "load_encoded", "default_cache_dir", "names", "CACHE_FORMAT"]

CACHE_FORMAT = 2
_HASH_BLOCK = 16 << 20

# Progress callback: (stage name, bytes done in this stage, total bytes of the stage).
Progress = Callable[[str, int, int], None]


@dataclass
class Corpus:
    vocab: Vocab
    ids: np.ndarray               # (N,) ids of data.path, vocab.dtype; a read-only map when cached
    val_ids: np.ndarray | None    # (M,) ids of data.val_path, or None
    counts: np.ndarray            # (V,) int64: how often each id occurs in ids
    distinct: int                 # distinct characters in all the files (> len(vocab) - 1 with <unk>)
    source: str                   # how it was loaded: "cache" | "built and cached" | "no cache"
    entry: Path | None            # the cache directory used, if any


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "charrnn"


@dataclass
class Loaded:
    """What training needs of the data section."""

    vocab: Vocab
    train_ids: np.ndarray         # (N,) read-only memory map when the cache is on
    val_ids: np.ndarray           # (M,)
    train_counts: np.ndarray      # (V,) int64: how often each id occurs in train_ids
    note: str                     # the <unk> mapping, if any, in words


def load_corpus(cfg: Config, progress: Progress | None = None,
                warn: Callable[[str], None] = print) -> Loaded:
    """The data section's corpus, from the cache when data.cache is on (see load_encoded)."""
    data = cfg.data
    cache_dir = (Path(data.cache_dir) if data.cache_dir else default_cache_dir()) if data.cache else None
    corpus = load_encoded(data.path, data.val_path, data.encoding, data.max_vocab, cache_dir,
                          progress, warn)
    vocab, ids = corpus.vocab, corpus.ids
    note = ""
    if vocab.unk_id is not None:
        note = (f"data.max_vocab={data.max_vocab}: the text has {corpus.distinct} distinct characters; "
                f"the {corpus.distinct - len(vocab) + 1} rarest are read as <unk>")
    if data.val_path:
        if len(corpus.val_ids) < 2:
            raise CharRNNError(f"{names(data.val_path)}: the validation text has {len(corpus.val_ids)} "
                               "character; scoring needs at least 2; use a longer data.val_path")
        return Loaded(vocab, ids, corpus.val_ids, corpus.counts, note)
    n_val = int(len(ids) * data.val_fraction)  # as split() counts
    if n_val < 2:
        raise CharRNNError(f"{names(data.path)}: data.val_fraction {data.val_fraction:g} of "
                           f"{len(ids):,} characters leaves {n_val} for validation, at least 2 are "
                           "needed; raise data.val_fraction, use more text, or give data.val_path")
    train_ids, val_ids = split(ids, data.val_fraction)
    return Loaded(vocab, train_ids, val_ids, corpus.counts - id_counts(val_ids, len(vocab)), note)


def names(paths: str | list[str]) -> str:
    """data.path / data.val_path as shown in a message."""
    return paths if isinstance(paths, str) else ", ".join(paths)


def load_encoded(paths, val_paths, encoding: str = "utf-8", max_vocab: int | None = None,
                 cache_dir: Path | None = None, progress: Progress | None = None,
                 warn: Callable[[str], None] = print) -> Corpus:
    """The encoded corpus of data.path (and data.val_path): from the cache in cache_dir when it
    holds this corpus, else built in two passes (and cached there). cache_dir None: no cache."""
    files = as_paths(paths)
    val_files = as_paths(val_paths) if val_paths else []
    codec = check_encoding(encoding)
    for name in files + val_files:  # the reader's one-line errors come before any hashing
        for _ in text_chunks(name, codec, chunk_bytes=1 << 16):
            break
    if cache_dir is None:
        return _build(files, val_files, codec, max_vocab, None, progress)[0]
    key = _key(files, val_files, codec, max_vocab, progress)
    entry = Path(cache_dir) / key
    if entry.exists():
        try:
            return _open_entry(entry, key, "cache", progress)
        except _Damaged as why:
            warn(f"warning: the corpus cache {entry} is damaged ({why}); rebuilding it")
            shutil.rmtree(entry, ignore_errors=True)
    scratch = None
    try:
        scratch = _scratch_dir(Path(cache_dir), key)
        corpus, digests = _build(files, val_files, codec, max_vocab, scratch, progress)
        _write_json(scratch / "meta.json", {
            "format": CACHE_FORMAT, "key": key, "encoding": codec, "max_vocab": max_vocab,
            "files": files, "val_files": val_files, "vocab": corpus.vocab.to_json(),
            "distinct": corpus.distinct, "counts": corpus.counts.tolist(), "arrays": digests})
        try:
            os.rename(scratch, entry)
        except OSError:
            if not entry.exists():
                raise
            # another run cached the same corpus meanwhile: keep its entry
            shutil.rmtree(scratch, ignore_errors=True)
            return _open_entry(entry, key, "cache", progress)
    except OSError as exc:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        warn(f"warning: cannot write the corpus cache in {cache_dir} ({exc.strerror or exc}); "
             "loading without it")
        return _build(files, val_files, codec, max_vocab, None, progress)[0]
    except BaseException:  # bad text, Ctrl-C: no half-written entry stays behind
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _open_entry(entry, key, "built and cached", None, verify=False)


class _Damaged(Exception):
    """A cache entry that does not match its meta.json: it is rebuilt."""


def _key(files: list[str], val_files: list[str], codec: str, max_vocab, progress) -> str:
    """SHA-256 over everything the encoded ids depend on."""
    h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "encoding": codec, "max_vocab": max_vocab,
                                   "files": len(files), "val_files": len(val_files)}).encode())
    total = sum(os.path.getsize(f) for f in files + val_files)
    done = 0
    for name in files + val_files:
        with open(name, "rb") as fh:
            while block := fh.read(_HASH_BLOCK):
                h.update(block)
                done += len(block)
                if progress:
                    progress("checking the corpus", done, total)
        h.update(b"\x00end of file\x00")
    return h.hexdigest()


def _scratch_dir(cache_dir: Path, key: str) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{key[:16]}.tmp-", dir=cache_dir))


def _chunks(names: list[str], codec: str, stage: str, progress: Progress | None):
    """The text chunks of several files in order, reporting the bytes read to progress."""
    total = sum(os.path.getsize(f) for f in names)
    before = 0
    for name in names:
        report = (lambda position, base=before: progress(stage, base + position, total)) if progress else None
        yield from text_chunks(name, codec, on_progress=report)
        before += os.path.getsize(name)


def _build(files, val_files, codec, max_vocab, scratch: Path | None, progress):
    """(Corpus, {part: its length, dtype and CRC-32}) by two passes; the ids go to .npy files in
    scratch, or, without one, to arrays in memory."""
    by_part, lengths = {}, {}
    for part, names in (("train", files), ("val", val_files)):
        by_part[part], lengths[part] = np.zeros(0, dtype=np.int64), 0
        for text in _chunks(names, codec, "counting characters", progress):
            by_part[part] = add_counts(by_part[part], code_point_counts(text))
            lengths[part] += len(text)
    counts = add_counts(by_part["train"], by_part["val"])
    vocab = Vocab.from_counts(counts, max_vocab)
    on_unknown = "unk" if vocab.unk_id is not None else "error"
    arrays, digests = {}, {}
    for part, names in (("train", files), ("val", val_files)):
        if not names:
            continue
        n = lengths[part]
        sink = _NpyWriter(scratch / f"{part}.npy", n, vocab.dtype) if scratch else _ArrayWriter(n, vocab.dtype)
        with sink:
            for text in _chunks(names, codec, f"encoding the {part} text", progress):
                sink.write(vocab.encode(text, on_unknown))
        arrays[part], digests[part] = sink.result, {"length": n, "dtype": vocab.dtype.str,
                                                     "crc32": sink.crc}
    corpus = Corpus(vocab, arrays["train"], arrays.get("val"), _id_counts(vocab, by_part["train"]),
                    int(np.count_nonzero(counts)), "no cache", None)
    return corpus, digests


def _id_counts(vocab: Vocab, cp_counts: np.ndarray) -> np.ndarray:
    """(V,) id counts from code point counts: <unk> gets every code point the vocabulary lacks."""
    counts = np.zeros(len(vocab), dtype=np.int64)
    for i, ch in enumerate(vocab.chars):
        if ch != Vocab.UNK and ord(ch) < len(cp_counts):
            counts[i] = cp_counts[ord(ch)]
    if vocab.unk_id is not None:
        counts[vocab.unk_id] = cp_counts.sum() - counts.sum()
    return counts


class _ArrayWriter:
    """Ids written chunk by chunk into an array in memory."""

    def __init__(self, n: int, dtype):
        self.result = np.empty(n, dtype=dtype)
        self.written = 0
        self.crc = None

    def write(self, ids: np.ndarray) -> None:
        self.result[self.written : self.written + len(ids)] = ids
        self.written += len(ids)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None and self.written != len(self.result):
            raise CharRNNError("the corpus changed while it was being read; run again")


class _NpyWriter(_ArrayWriter):
    """Ids written chunk by chunk into a .npy file whose space is reserved first, so that a full
    disk shows as an OSError at the start (a memory map would die of SIGBUS instead)."""

    def __init__(self, path: Path, n: int, dtype):
        self.path, self.n, self.dtype = path, n, np.dtype(dtype)
        self.written = 0
        self._crc = 0

    def __enter__(self):
        self._fh = open(self.path, "wb")
        try:
            np.lib.format.write_array_header_1_0(
                self._fh, {"descr": self.dtype.str, "fortran_order": False, "shape": (self.n,)})
            header = self._fh.tell()
            if hasattr(os, "posix_fallocate") and self.n:
                os.posix_fallocate(self._fh.fileno(), header, self.n * self.dtype.itemsize)
        except BaseException:
            self._fh.close()
            raise
        return self

    def write(self, ids: np.ndarray) -> None:
        data = ids.astype(self.dtype, copy=False).tobytes()
        self._fh.write(data)
        self._crc = zlib.crc32(data, self._crc)
        self.written += len(ids)

    def __exit__(self, *exc):
        self._fh.close()
        if exc[0] is None:
            if self.written != self.n:
                raise CharRNNError("the corpus changed while it was being read; run again")
            self.crc = self._crc
            self.result = None


def _meta_checksum(meta: dict) -> str:
    """SHA-256 of meta.json's fields other than the checksum itself."""
    fields = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _write_json(path: Path, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({**obj, "checksum": _meta_checksum(obj)}, fh, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())


def _open_entry(entry: Path, key: str, source: str, progress: Progress | None,
                verify: bool = True) -> Corpus:
    """The corpus of a cache entry, memory-mapped, after checking it whole (verify: the ids'
    CRCs too; not needed for an entry just written); _Damaged if any part does not match
    meta.json."""
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        if meta.get("checksum") != _meta_checksum(meta):
            raise _Damaged("meta.json does not match its checksum")
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            raise _Damaged("meta.json belongs to another corpus or cache format")
        vocab = Vocab.from_json(meta["vocab"])
        arrays = {}
        for part, want in meta["arrays"].items():
            ids = np.load(entry / f"{part}.npy", mmap_mode="r", allow_pickle=False)
            if ids.shape != (want["length"],) or ids.dtype.str != want["dtype"] or ids.dtype != vocab.dtype:
                raise _Damaged(f"{part}.npy holds {ids.shape} {ids.dtype}, meta.json says "
                               f"({want['length']},) {want['dtype']}")
            if verify and _checksum(ids, part, progress) != want["crc32"]:
                raise _Damaged(f"{part}.npy does not match its checksum")
            arrays[part] = ids
        counts = np.asarray(meta["counts"], dtype=np.int64)
        if counts.shape != (len(vocab),) or counts.sum() != len(arrays["train"]):
            raise _Damaged("meta.json's character counts do not fit the ids")
        return Corpus(vocab, arrays["train"], arrays.get("val"), counts, int(meta["distinct"]),
                      source, entry)
    except _Damaged:
        raise
    except (OSError, ValueError, KeyError, TypeError, CharRNNError) as exc:
        raise _Damaged(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def _checksum(ids: np.memmap, part: str, progress: Progress | None) -> int:
    """CRC-32 of the ids a memory map shows, read from its file with ordinary reads (pages
    touched through the map would count in the process's resident memory). A CRC finds any
    truncation or damage and runs at several GB/s; the key, which must tell files apart, is a
    SHA-256."""
    crc, done = 0, 0
    size = ids.size * ids.itemsize
    with open(ids.filename, "rb") as fh:
        fh.seek(ids.offset)
        while done < size and (block := fh.read(min(_HASH_BLOCK, size - done))):
            crc = zlib.crc32(block, crc)
            done += len(block)
            if progress:
                progress(f"checking the cached {part} ids", done, size)
    return crc


def encode_file(path: str, vocab: Vocab, encoding: str = "utf-8") -> tuple[np.ndarray, int]:
    """(ids (N,), excluded) of one text file in a given vocabulary, read chunk by chunk into a
    temporary file that is then memory-mapped (and already unlinked), so memory stays bounded
    whatever the size. Characters outside the vocabulary become <unk> if it has one, else they
    are left out and counted in `excluded`."""
    on_unknown = "unk" if vocab.unk_id is not None else "drop"
    excluded, n = 0, 0
    with tempfile.TemporaryFile(prefix="charrnn-eval-") as fh:
        for text in text_chunks(path, encoding):
            ids = vocab.encode(text, on_unknown)
            excluded += len(text) - len(ids)
            n += len(ids)
            fh.write(ids.tobytes())
        fh.flush()
        if n == 0:
            return np.empty(0, dtype=vocab.dtype), excluded
        return np.memmap(fh, dtype=vocab.dtype, mode="r", shape=(n,)), excluded
