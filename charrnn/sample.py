"""Turning a trained model's next-character logits into text.

`choose` draws one id per row from logits, with temperature, top-k, top-p (nucleus) and an optional
mask of allowed ids; it is the single place where randomness enters sampling, so every decoder
(plain text here, constrained poems elsewhere) shares its exactness guarantees.

`generate` runs a model forward from a prime text and streams the continuation as text chunks;
several samples are drawn together through the batch dimension.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

from charrnn import categorical
from charrnn.errors import CharRNNError, UsageError

if TYPE_CHECKING:
    from charrnn.corpus import Vocab

__all__ = ["choose", "check_count", "check_sampling_options", "generate", "one_stream", "StepModel"]

# With an empty prime the model still needs an input to produce its first logits: the first of
# these characters that the vocabulary has (a line break is where text naturally begins), else id 0.
_START_CHARS = ("\n", " ")
# A single streamed sample is handed out in chunks of this many characters, so output appears
# live without paying a decode and a write per character.
_CHUNK = 32
# Upper limits of a request: far beyond any real use, low enough that an absurd number is a
# usage error or, at worst, a MemoryError before any output.
MAX_LENGTH = 100_000_000
MAX_SAMPLES = 100_000


class StepModel(Protocol):
    """What sampling needs from a model (charrnn.model.CharRNN provides it)."""

    vocab_size: int
    dtype: np.dtype

    def init_state(self, batch_size: int) -> list:
        """The zero recurrent state for batch_size streams."""

    def step(self, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """ids (B,) int -> logits (B, V) float, new state; `state` is left unchanged."""

    # Optional: one_stream() -> a charrnn.stepper.OneStream giving the same logits for one
    # stream, faster, or None. `generate` and `poetry.compose` use it at batch size 1.


def check_sampling_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise UsageError, naming the command-line option, if a sampling option is out of range.

    temperature: a finite number >= 0; top_k: None or an integer >= 1; top_p: None or in (0, 1].
    """
    if not temperature >= 0:  # written this way so that NaN is rejected too
        raise UsageError("--temperature must be >= 0")
    if temperature == np.inf:
        raise UsageError("--temperature must be finite")
    if top_k is not None:
        try:
            k = operator.index(top_k)
        except TypeError:
            raise UsageError("--top-k must be an integer >= 1") from None
        if k < 1:
            raise UsageError("--top-k must be >= 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError("--top-p must be in (0, 1]")


def choose(
    logits: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Draw one id per row from the distribution the logits define.

    logits: (B, V) float, any float dtype (the probabilities are computed in float64).
    rng: the only source of randomness; exactly one uniform is drawn per row, and none when
        temperature is 0.
    temperature: logits are divided by it; 0 means greedy (argmax, first one on ties).
    top_k: keep only the k largest logits of each row (entries tied with the k-th are kept too,
        so the result does not depend on an arbitrary tie order); k >= V changes nothing.
    top_p: after top-k, keep the smallest set of most probable ids whose probability reaches
        top_p (at least one id; ties with the least probable kept id are kept too).
    allowed: (V,) or (B, V) bool, False = forbidden. Forbidden ids are never returned; top-k and
        top-p then act among the allowed ids only.
    Returns ids (B,) int64.

    The draw is an exact categorical draw from the renormalised kept probabilities: one uniform
    u in [0, 1) per row against the normalised cumulative sum. An id of probability zero adds
    exactly nothing to the cumulative sum, so its interval is empty and it can never be drawn,
    whatever u is, and the last cumulative entry is exactly 1 > u, so the search never runs off
    the end (charrnn.categorical states the rule and finds its id fast on wide rows).

    Raises UsageError for out-of-range options, ValueError for a malformed call (wrong shapes, a
    row with no allowed id), CharRNNError if the model produced NaN or infinite logits.
    """
    check_sampling_options(temperature, top_k, top_p)
    return _draw(logits, rng, temperature, top_k, top_p, allowed)


def _draw(logits, rng, temperature, top_k, top_p, allowed):
    """`choose` without the option checks, for callers that validated once up front."""
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (B, V), got shape {logits.shape}")
    if allowed is not None:
        logits = np.array(logits, dtype=np.float64)
        apply_mask(logits, allowed)
    # The maximum of the logits as they are is the maximum of their float64 values (the cast is
    # exact and keeps the order), so it is taken before the copy.
    top = logits.max(axis=1, keepdims=True).astype(np.float64, copy=False)
    if not np.isfinite(top).all():
        raise_non_finite(top)
    if temperature == 0:
        return logits.argmax(axis=1).astype(np.int64, copy=False)

    # Subtracting the row maximum first keeps exp() in range; dividing by a tiny temperature may
    # then overflow to -inf, which is the correct limit (probability 0), so that is not an error.
    z = np.subtract(logits, top, dtype=np.float64)  # a private copy: everything below works in place
    if temperature != 1:
        with np.errstate(over="ignore"):
            z /= temperature
    vocab_size = z.shape[1]
    if top_k is not None and top_k < vocab_size:
        kth = np.partition(z, vocab_size - top_k, axis=1)[:, vocab_size - top_k, None]
        z[z < kth] = -np.inf
    np.exp(z, out=z)  # unnormalised probabilities; the largest is exactly 1
    if top_p is not None and top_p < 1:
        keep_nucleus(z, top_p)

    return categorical.draw(z, rng.random(z.shape[0]))


def apply_mask(z: np.ndarray, allowed: np.ndarray) -> None:
    """Set the logits of forbidden ids to -inf in place; reject malformed masks."""
    allowed = np.asarray(allowed)
    if allowed.dtype != np.bool_:
        raise ValueError(f"allowed must be a bool mask, got dtype {allowed.dtype}")
    if allowed.shape not in (z.shape[1:], z.shape):
        raise ValueError(f"allowed has shape {allowed.shape}; expected {z.shape[1:]} or {z.shape}")
    if not allowed.any(axis=-1).all():
        raise ValueError("allowed forbids every id of some row; nothing can be chosen")
    np.copyto(z, -np.inf, where=~allowed)


def raise_non_finite(top: np.ndarray) -> None:
    """Explain why some row's largest allowed logit is not a finite number."""
    if np.isnan(top).any() or (top == np.inf).any():
        raise CharRNNError(
            "the model produced NaN or infinite logits; the checkpoint is corrupt or its "
            "training diverged (retrain with a lower learning rate or stronger clipping)"
        )
    raise ValueError("every allowed id of some row has logit -inf; nothing can be chosen")


def keep_nucleus(p: np.ndarray, top_p: float) -> None:
    """Zero, in place, every probability outside each row's top-p nucleus.

    p: (B, V) float64 unnormalised probabilities. An id is in the nucleus when the mass of the
    ids more probable than it is still below top_p of the total.
    """
    desc = -np.sort(-p, axis=1)
    before = np.zeros_like(desc)
    np.cumsum(desc[:, :-1], axis=1, out=before[:, 1:])
    total = before[:, -1:] + desc[:, -1:]
    kept = (before < top_p * total).sum(axis=1)  # >= 1: nothing precedes the most probable id
    smallest_kept = desc[np.arange(len(desc)), kept - 1, None]
    p[p < smallest_kept] = 0.0


def generate(
    model: StepModel,
    vocab: Vocab,
    rng: np.random.Generator,
    *,
    prime: str = "",
    length: int = 200,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop: str | None = None,
    on_unknown: str = "error",
) -> Iterator[str]:
    """Sample text from `model`; returns an iterator of text chunks to write out as they come.

    prime: text fed to the model (one step per character) before sampling; it is the start of
        every sample's output. Characters the vocabulary lacks are handled by on_unknown:
        "error" (CharRNNError listing them), "drop" (left out) or "unk" (mapped to <unk>, shown
        as U+FFFD). The output shows the prime as the model saw it, i.e. after dropping or
        mapping. With an empty prime the state starts at zero and the first input is a line
        break (else a space, else id 0); that start character is not part of the output.
    length: number of new characters per sample after the prime (0 to MAX_LENGTH).
    num_samples: samples drawn together through the batch dimension (B = num_samples, 1 to
        MAX_SAMPLES).
    temperature, top_k, top_p: as in `choose`; temperature 0 is greedy and uses no randomness.
    stop: a sample ends right after the first occurrence of this string in its generated text
        (the stop string is included; occurrences inside the prime do not count). Every sample
        stops on its own; sampling ends when all have stopped or reached `length`.

    Output: with one sample, the prime first, then the new text in chunks of at most 32
    characters as it is generated. With several, each sample is yielded whole once it and the
    samples before it are finished, preceded by a header line "--- sample K ---" (K from 1);
    every header after the first also gets a line break in front of it, so the output is
    "--- sample 1 ---\\n" + text1 + "\\n--- sample 2 ---\\n" + text2 + ... and splits back
    exactly. No line break is added after the last sample. The same rng state gives the same
    text.

    All arguments are checked before this returns (UsageError for out-of-range options,
    CharRNNError for a prime or stop string the vocabulary cannot represent), so a bad request
    never produces partial output.
    """
    check_sampling_options(temperature, top_k, top_p)
    check_count(length, "--length", minimum=0, maximum=MAX_LENGTH)
    check_count(num_samples, "--num-samples", minimum=1, maximum=MAX_SAMPLES)
    if len(vocab) != model.vocab_size:
        raise CharRNNError(
            f"the vocabulary has {len(vocab)} characters but the model predicts "
            f"{model.vocab_size}; the checkpoint is inconsistent (retrain or re-save it)"
        )
    prime_ids = _encode_prime(vocab, prime, on_unknown)
    stop_ids = _encode_stop(vocab, stop)
    context = prime_ids.tolist() or [start_id(vocab)]
    steps = _steps(model, rng, context, num_samples, length, (temperature, top_k, top_p))
    prime_text = vocab.decode(prime_ids)
    # Allocated here, not in the generator: a request too large to allocate fails before any output.
    out = np.empty((num_samples, length), dtype=np.int64)
    stream = one_stream(model, num_samples)
    if stream is not None:
        options = (temperature, top_k, top_p)
        return _stream_lean(stream, vocab, prime_text, context, rng, options, out[0], stop_ids)
    if num_samples == 1:
        return _stream_one(vocab, prime_text, steps, out[0], stop_ids)
    return _stream_many(vocab, prime_text, steps, out, stop_ids)


def check_count(value: int, option: str, minimum: int, maximum: int) -> None:
    """UsageError naming `option` unless value is an integer from minimum to maximum."""
    try:
        ok = minimum <= operator.index(value) <= maximum
    except TypeError:
        ok = False
    if not ok:
        raise UsageError(f"{option} must be an integer from {minimum} to {maximum:,}")


def _encode_prime(vocab: Vocab, prime: str, on_unknown: str) -> np.ndarray:
    """The ids (N,) of the prime text, unknown characters handled as `on_unknown` says."""
    if on_unknown not in ("error", "drop", "unk"):
        raise UsageError(f"--on-unknown must be error, drop or unk, got {on_unknown!r}")
    missing = vocab.missing(prime)
    if missing and (on_unknown == "error" or (on_unknown == "unk" and vocab.unk_id is None)):
        listed = ", ".join(repr(c) for c in missing[:20]) + (" ..." if len(missing) > 20 else "")
        fix = "pass --on-unknown drop to leave them out"
        if vocab.unk_id is not None:
            fix += " or --on-unknown unk to map them to <unk>"
        raise CharRNNError(
            f"--prime has {len(missing)} character(s) not in the model's vocabulary: {listed} "
            f"(remove them, or {fix})"
        )
    return vocab.encode(prime, on_unknown=on_unknown)


def _encode_stop(vocab: Vocab, stop: str | None) -> np.ndarray | None:
    """The ids (S,) int64 of the stop string, or None without one."""
    if stop is None:
        return None
    if not isinstance(stop, str) or not stop:
        raise UsageError("--stop must be a non-empty string")
    missing = vocab.missing(stop)
    if missing:
        listed = ", ".join(repr(c) for c in missing[:20])
        raise CharRNNError(
            f"--stop has character(s) the model can never generate: {listed} "
            "(use a stop string made of characters from the training text)"
        )
    return vocab.encode(stop).astype(np.int64)


def start_id(vocab: Vocab, candidates: tuple[str, ...] = _START_CHARS) -> int:
    """The input fed first when there is no prime: the first of `candidates` the vocabulary
    has (for text, a line break, else a space), else id 0."""
    for ch in candidates:
        if ch in vocab:
            return vocab.index[ch]
    return 0


def _steps(model, rng, context, batch_size, length, options) -> Iterator[np.ndarray]:
    """Feed `context` (list of ids) to all streams, then yield the ids (B,) int64 of each new
    character, feeding each back before drawing the next. Stops after `length` draws, or
    earlier if the consumer stops asking (no model step is wasted either way)."""
    if length == 0:
        return
    state = model.init_state(batch_size)
    for token in context:
        logits, state = model.step(np.full(batch_size, token, dtype=np.int64), state)
    temperature, top_k, top_p = options
    for n in range(length):
        ids = _draw(logits, rng, temperature, top_k, top_p, None)
        yield ids
        if n + 1 < length:
            logits, state = model.step(ids, state)


def _stream_one(vocab, prime_text, steps, out, stop_ids) -> Iterator[str]:
    """Chunks of a single sample: the prime, then the new text every _CHUNK characters.
    out (length,): where the sample's ids are collected."""
    if prime_text:
        yield prime_text
    n_stop = 0 if stop_ids is None else len(stop_ids)
    last_stop_id = -1 if stop_ids is None else int(stop_ids[-1])  # ids are >= 0: never matches
    done = start = 0
    for ids in steps:
        token = ids[0]
        out[done] = token
        done += 1
        # Compare the whole tail only when the last character already matches.
        if token == last_stop_id and done >= n_stop:
            if (out[done - n_stop : done] == stop_ids).all():
                break
        if done - start == _CHUNK:
            yield vocab.decode(out[start:done])
            start = done
    if done > start:
        yield vocab.decode(out[start:done])


def one_stream(model, batch_size: int):
    """The model's lean one-stream stepper (charrnn.stepper.OneStream, from CharRNN.one_stream)
    when batch_size is 1 and the model offers one, else None: then model.step and choose serve."""
    make = getattr(model, "one_stream", None)
    return make() if batch_size == 1 and make is not None else None


def _stream_lean(stream, vocab, prime_text, context, rng, options, out, stop_ids) -> Iterator[str]:
    """_stream_one's chunks, from a OneStream: the same draws in the same order, so the same
    text. out (length,): where the sample's ids are collected.

    np.errstate is entered once per chunk rather than once per layer and character, and never
    held across a yield, where it would apply to the consumer's code."""
    if prime_text:
        yield prime_text
    length = len(out)
    if length == 0:
        return
    n_stop = 0 if stop_ids is None else len(stop_ids)
    last_stop_id = -1 if stop_ids is None else int(stop_ids[-1])  # ids are >= 0: never matches
    temperature, top_k, top_p = options
    step, draw = stream.step, stream.draw
    with np.errstate(over="ignore"):
        for token in context:
            logits = step(token)
    done, stopped = 0, False
    while done < length and not stopped:
        start, end = done, min(done + _CHUNK, length)
        with np.errstate(over="ignore"):
            while done < end:
                if done:  # the previous character goes in; none after the last or a stop
                    logits = step(token)
                token = draw(logits, rng, temperature, top_k, top_p)
                out[done] = token
                done += 1
                if token == last_stop_id and done >= n_stop and (out[done - n_stop : done] == stop_ids).all():
                    stopped = True
                    break
        yield vocab.decode(out[start:done])


def _stream_many(vocab, prime_text, steps, out, stop_ids) -> Iterator[str]:
    """Each finished sample, in order, with its header (see `generate`).
    out (num_samples, length): where the samples' ids are collected."""
    batch_size, length = out.shape
    ends = np.full(batch_size, length)  # number of generated characters kept per sample
    running = np.ones(batch_size, dtype=bool)
    n_stop = 0 if stop_ids is None else len(stop_ids)
    last_stop_id = -1 if stop_ids is None else int(stop_ids[-1])
    emitted = 0
    for n, ids in enumerate(steps):
        out[:, n] = ids
        if stop_ids is None or n + 1 < n_stop:
            continue
        hit = running & (ids == last_stop_id)
        if not hit.any():
            continue
        hit &= (out[:, n + 1 - n_stop : n + 1] == stop_ids).all(axis=1)
        ends[hit] = n + 1
        running &= ~hit
        while emitted < batch_size and not running[emitted]:
            yield _with_header(emitted, prime_text + vocab.decode(out[emitted, : ends[emitted]]))
            emitted += 1
        if emitted == batch_size:
            return
    for b in range(emitted, batch_size):
        yield _with_header(b, prime_text + vocab.decode(out[b, : ends[b]]))


def _with_header(index: int, text: str) -> str:
    """Sample `index` (0-based) preceded by its header line (see `generate` for the format)."""
    gap = "\n" if index else ""
    return f"{gap}--- sample {index + 1} ---\n{text}"
