"""Checkpoints: one self-describing .npz file, written atomically and read without unpickling.

Layout: every array under its own key (parameters `layers.0.Wx`, optimizer state `optim.*`,
carried hidden state, ...), plus a 0-d unicode array under the key "meta" holding a JSON object
(model arguments, vocabulary, resolved config, step, ...). The JSON carries "format_version" so a
reader can refuse a file it does not understand. Any NumPy (`np.load(..., allow_pickle=False)`)
or zip-reading tool can open the file; nothing in it is a pickle.

A save goes through charrnn.atomic.replace_file, so a crash or a full disk leaves either the old
checkpoint or the new one, never half a file.
"""

import dataclasses
import json
import math
import os
import zipfile
import zlib
from typing import BinaryIO

import numpy as np

from charrnn.atomic import replace_file
from charrnn.config import ModelConfig
from charrnn.corpus import Vocab
from charrnn.errors import CharRNNError, UsageError
from charrnn.model import CharRNN, ModelSpec

__all__ = ["FORMAT_VERSION", "load_checkpoint", "load_model", "model_from_checkpoint",
           "save_checkpoint"]

FORMAT_VERSION = 2
_META = "meta"
# np.savez takes the file and these options by keyword, so arrays cannot use these names
_RESERVED = {_META, "file", "allow_pickle"}
# what reading a damaged archive raises, from zipfile, zlib, the .npy parser or the allocator
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError,
           MemoryError, NotImplementedError)


def save_checkpoint(path: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write `arrays` and `meta` to one .npz file at `path`, atomically.

    arrays: name -> ndarray of any numeric, bool or unicode dtype and any shape (0-d included);
        object arrays are refused (ValueError) because they could only be stored as pickles.
    meta: a JSON-serialisable dict (NumPy scalars are converted); stored with "format_version".
    Raises CharRNNError if the file cannot be written; the previous file at `path` is then intact.
    """
    payload = _validated_arrays(arrays)
    payload[_META] = np.array(_meta_json(meta))
    # uncompressed: checkpoints are written often and must be fast
    replace_file(path, lambda fh: np.savez(fh, **payload), previous="checkpoint")


def _validated_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of the mapping with ndarray values; ValueError for a caller's mistake."""
    if not isinstance(arrays, dict):
        raise ValueError(f"arrays must be a dict of name -> ndarray, got {type(arrays).__name__}")
    payload = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or name in _RESERVED:
            raise ValueError(f"array name {name!r} is empty, not a string, "
                             f"or one of the reserved {sorted(_RESERVED)}")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise ValueError(f"array {name!r} has dtype object; a checkpoint stores no pickles")
        payload[name] = array
    return payload


def _meta_json(meta: dict) -> str:
    """The meta dict plus format_version as JSON text; ValueError if it is not serialisable."""
    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        # infinities stay allowed: "best val loss so far" starts at inf
        return json.dumps({**meta, "format_version": FORMAT_VERSION}, default=_json_scalar,
                          ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta is not JSON-serialisable: {exc}") from exc


def _json_scalar(value: object) -> object:
    """json.dumps fallback: NumPy scalars (np.float32 losses, np.int64 steps) as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def load_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by save_checkpoint; never unpickles anything.

    Returns (arrays, meta): every stored array except "meta", loaded into memory (the file is
    closed on return), and the meta dict including "format_version".
    Raises CharRNNError with a one-line message naming `path` for any unreadable, damaged,
    foreign, pickle-bearing or newer-format file.
    """
    path = os.fspath(path)
    try:
        # opened here, not by np.load, which leaks its handle when the zip directory is bad
        fh = open(path, "rb")
    except FileNotFoundError:
        raise CharRNNError(f"{path}: no such checkpoint file") from None
    except IsADirectoryError:
        raise CharRNNError(f"{path}: is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CharRNNError(f"{path}: cannot read checkpoint: {exc.strerror or exc}") from None
    try:
        with fh:
            _check_zip_signature(fh, path)
            with np.load(fh, allow_pickle=False) as npz:
                arrays = {name: _read_member(npz, name, path) for name in npz.files}
    except _DAMAGE as exc:
        raise CharRNNError(f"{path}: damaged or truncated checkpoint ({_reason(exc)}); "
                           "use another checkpoint, e.g. best.npz or last.npz") from None
    if _META not in arrays:
        raise CharRNNError(f"{path}: no 'meta' entry; not a charrnn checkpoint")
    return arrays, _parse_meta(arrays.pop(_META), path)


def _check_zip_signature(fh: BinaryIO, path: str) -> None:
    """CharRNNError unless the file starts like a zip archive; leaves `fh` at its start."""
    head = fh.read(4)
    fh.seek(0)
    # checked first because np.load would take a .npy or a pickle file for something else
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise CharRNNError(f"{path}: not a charrnn checkpoint (not an .npz archive)")


def _read_member(npz: "np.lib.npyio.NpzFile", name: str, path: str) -> np.ndarray:
    """One array of the archive, read eagerly; pickled members are refused, not loaded."""
    try:
        value = npz[name]
    except ValueError as exc:
        # allow_pickle=False makes NumPy refuse object arrays before reading their pickle
        if "pickle" in str(exc):
            raise CharRNNError(f"{path}: entry {name!r} contains pickled objects; "
                               "refusing to load") from None
        raise
    if not isinstance(value, np.ndarray):
        raise CharRNNError(f"{path}: entry {name!r} is not a NumPy array; not a charrnn checkpoint")
    return value


def _parse_meta(meta: np.ndarray, path: str) -> dict:
    """The JSON object held by the 0-d unicode "meta" array, with a supported format_version."""
    if meta.ndim != 0 or meta.dtype.kind != "U":
        raise CharRNNError(f"{path}: 'meta' is not a JSON string; not a charrnn checkpoint")
    try:
        parsed = json.loads(str(meta[()]))
    except ValueError as exc:
        raise CharRNNError(f"{path}: 'meta' is not valid JSON ({_reason(exc)})") from None
    if not isinstance(parsed, dict):
        raise CharRNNError(f"{path}: 'meta' is not a JSON object; not a charrnn checkpoint")
    version = parsed.get("format_version")
    if version is None:
        raise CharRNNError(f"{path}: 'meta' has no format_version; not a charrnn checkpoint")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CharRNNError(f"{path}: unknown checkpoint format {version!r}; "
                           f"this version reads formats 1 to {FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise CharRNNError(f"{path}: written by a newer charrnn (format {version}); this version "
                           f"reads formats 1 to {FORMAT_VERSION}; upgrade charrnn to read it")
    return parsed


def _reason(exc: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _model_description(meta: dict, path: str) -> dict:
    """The checkpoint's model description (CharRNN's arguments), held to the config's rules."""
    description = meta.get("model")
    if not isinstance(description, dict):
        raise CharRNNError(f"{path}: the checkpoint has no model description; is it a charrnn checkpoint?")
    settings = {k: v for k, v in description.items() if k not in ModelSpec.NOT_IN_CONFIG}
    try:
        ModelConfig(**settings)
    except (TypeError, UsageError) as exc:  # TypeError: an entry the model section does not have
        raise CharRNNError(f"{path}: invalid model description ({exc})") from None
    vocab_size, dtype = description.get("vocab_size"), description.get("dtype", "float32")
    if not (isinstance(vocab_size, int) and not isinstance(vocab_size, bool) and vocab_size >= 1):
        raise CharRNNError(f"{path}: invalid model description (vocab_size is {vocab_size!r})")
    if dtype not in ("float32", "float64"):
        raise CharRNNError(f"{path}: invalid model description (dtype is {dtype!r})")
    return description


def model_from_checkpoint(arrays: dict[str, np.ndarray], meta: dict, path: str):
    """Rebuild the model and vocabulary stored by the trainer; validate every parameter.

    Returns (CharRNN with params set, Vocab). Raises CharRNNError naming `path` and the
    offending entry when the description, vocabulary or an array does not fit.
    """
    description = _model_description(meta, path)
    try:
        model = CharRNN(ModelSpec(**description))
    except (TypeError, ValueError, IndexError) as exc:
        raise CharRNNError(f"{path}: invalid model description ({exc})") from None
    try:
        vocab = Vocab.from_json(meta.get("vocab"))
    except CharRNNError as exc:
        raise CharRNNError(f"{path}: invalid vocabulary ({exc})") from None
    if len(vocab) != model.vocab_size:
        raise CharRNNError(f"{path}: the vocabulary has {len(vocab)} entries but the model expects "
                           f"{model.vocab_size}")
    params = {}
    for key, shape in model.param_shapes().items():
        if key not in arrays:
            raise CharRNNError(f"{path}: missing parameter array {key!r}")
        value = arrays[key]
        if value.shape != shape or value.dtype != model.dtype:
            raise CharRNNError(f"{path}: parameter {key!r} is {value.dtype}{list(value.shape)}, "
                               f"expected {model.dtype}{list(shape)}")
        if not np.isfinite(value).all():
            raise CharRNNError(f"{path}: parameter {key!r} holds NaN or infinite values; "
                               "use an earlier checkpoint of the run")
        params[key] = np.array(value)  # writable and owned
    model.params = params
    return model, vocab


def load_model(path: str):
    """(model, vocab, meta, arrays) from a checkpoint file; see model_from_checkpoint."""
    arrays, meta = load_checkpoint(path)
    model, vocab = model_from_checkpoint(arrays, meta, os.fspath(path))
    return model, vocab, meta, arrays


def describe(path: str, model: CharRNN, vocab: Vocab, meta: dict) -> str:
    """The lines `charrnn info` prints about a loaded checkpoint (all but its config)."""
    m = dataclasses.asdict(model.spec)
    progress = meta.get("progress") if isinstance(meta.get("progress"), dict) else {}
    best = progress.get("best_val", math.inf)
    elapsed = progress.get("elapsed")
    return "\n".join([
        f"checkpoint   {path} (format {meta.get('format_version')}, charrnn {meta.get('charrnn_version', '?')})",
        f"model        {m['cell']}{' (peephole)' if m['peephole'] else ''}{' ' + m['nonlinearity'] if m['cell'] == 'rnn' else ''}, "
        f"{m['num_layers']} layer(s) x {m['hidden_size']} units, "
        f"{'embedding ' + str(m['embedding_size']) if m['embedding_size'] else 'one-hot input'}, "
        f"dropout {m['dropout']}, {m['dtype']}",
        "head         " + ("full softmax" if m["head"] == "full" else
                            f"adaptive head: shortlist of {m['head_cutoffs'][0]:,} characters, "
                            f"clusters from ranks {', '.join(f'{c:,}' for c in m['head_cutoffs'])}, "
                            f"projections {', '.join(map(str, model.adaptive.sizes))}"),
        f"parameters   {model.num_params():,}",
        f"vocabulary   {len(vocab)} characters{' (with <unk>)' if vocab.unk_id is not None else ''}",
        f"progress     step {progress.get('step', '?')}, epoch {progress.get('epoch', '?')}, "
        "trained " + (f"{elapsed / 60:.1f} min" if isinstance(elapsed, (int, float)) else "?"),
        "best val     " + (f"{best:.4f} nats ({best / math.log(2):.4f} bits/char)"
                           if isinstance(best, float) and math.isfinite(best) else "n/a"),
        f"saved at     {meta.get('saved_at', '?')}",
    ])
