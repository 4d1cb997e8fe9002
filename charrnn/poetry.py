"""The four regulated forms of Tang verse: recognising them and composing them.

A poem is written as one line of text, its verse lines each ended by a full-width mark that
alternates ，(odd lines) and 。(even lines):

    白日依山尽，黄河入海流。欲穷千里目，更上一层楼。

    wujue  五言绝句  4 lines of 5 characters      wulv  五言律诗  8 lines of 5 characters
    qijue  七言绝句  4 lines of 7 characters      qilv  七言律诗  8 lines of 7 characters

`compose` drives any model with the `init_state` / `step` contract through one poem per batch
row and masks the logits so that the result is always in the requested form, whatever the model
says: Han characters where characters belong, the marks forced at line ends, optional acrostic
heads and primed opening characters; with tones, always in a tone template too. Rhyme, the ban
on lines copied from the training corpus and a repeat penalty are soft constraints, and best-of-N
keeps the candidate the model finds likeliest. The rules and rhyme books are charrnn.prosody's,
the slot-by-slot bookkeeping charrnn.constraints', the metrics charrnn.scansion's. This module
needs NumPy only.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from charrnn.constraints import VerseConstraints, templates_fitting_forced
from charrnn.errors import CharRNNError, UsageError
from charrnn.prosody import PING, SCHEMES, TEMPLATES, ZE, RhymeBook, check_template, load_book
from charrnn.sample import MAX_SAMPLES, check_count, check_sampling_options, choose, one_stream, start_id

COMMA, PERIOD = "，", "。"
# Fed before a poem's first character: the end of the previous poem.
_POEM_START = ("\n", PERIOD)
MAX_PENALTY = 100.0  # a repeat penalty (nats) beyond any logit gap: a ban


class Form(NamedTuple):
    """One regulated form: `chars` Han characters per line, `lines` lines."""

    key: str
    name: str
    chars: int
    lines: int


FORMS: dict[str, Form] = {
    "wujue": Form("wujue", "五言绝句", 5, 4),
    "qijue": Form("qijue", "七言绝句", 7, 4),
    "wulv": Form("wulv", "五言律诗", 5, 8),
    "qilv": Form("qilv", "七言律诗", 7, 8),
}
_FORM_BY_NAME = {**FORMS, **{f.name: f for f in FORMS.values()}}

# The CJK Unified Ideographs: the blocks of the base set and of extensions A to J (whole blocks;
# their few unassigned code points never occur in text), plus the twelve code points of the
# compatibility block that are unified ideographs themselves (U+FA0E 﨎, U+FA11 﨑, ...).
# Inclusive (first, last) code points, sorted.
HAN_RANGES: tuple[tuple[int, int], ...] = (
    (0x3400, 0x4DBF),    # extension A
    (0x4E00, 0x9FFF),    # base set
    (0xFA0E, 0xFA0F), (0xFA11, 0xFA11), (0xFA13, 0xFA14), (0xFA1F, 0xFA1F),
    (0xFA21, 0xFA21), (0xFA23, 0xFA24), (0xFA27, 0xFA29),
    (0x20000, 0x2A6DF),  # extension B
    (0x2A700, 0x2B73F),  # extension C
    (0x2B740, 0x2B81F),  # extension D
    (0x2B820, 0x2CEAF),  # extension E
    (0x2CEB0, 0x2EBEF),  # extension F
    (0x2EBF0, 0x2EE5F),  # extension I
    (0x30000, 0x3134F),  # extension G
    (0x31350, 0x323AF),  # extension H
    (0x323B0, 0x3347F),  # extension J
)
_HAN_FIRST = np.array([first for first, _ in HAN_RANGES], dtype=np.int64)
_HAN_LAST = np.array([last for _, last in HAN_RANGES], dtype=np.int64)
# The same ranges as the body of a regular-expression character class, for fast string checks.
HAN_CLASS = "".join(f"{chr(first)}-{chr(last)}" for first, last in HAN_RANGES)
_HAN_TEXT = re.compile(f"[{HAN_CLASS}]+")


def all_han(text: str) -> bool:
    """True if `text` is non-empty and made of CJK unified ideographs only (any extension)."""
    return _HAN_TEXT.fullmatch(text) is not None


def is_han(ch: str) -> bool:
    """True if `ch` is a single CJK unified ideograph (any extension)."""
    return len(ch) == 1 and all_han(ch)


def han_mask(tokens: list[str]) -> np.ndarray:
    """(len(tokens),) bool: which tokens are single Han characters (multi-character tokens such
    as "<unk>" never are)."""
    codes = np.array([ord(t) if len(t) == 1 else -1 for t in tokens], dtype=np.int64)
    k = np.searchsorted(_HAN_FIRST, codes, side="right") - 1
    return (k >= 0) & (codes <= _HAN_LAST[np.maximum(k, 0)])


def get_form(name: str) -> Form:
    """The form named by its key (`wujue`) or its Chinese name (`五言绝句`); UsageError otherwise."""
    form = _FORM_BY_NAME.get(name) if isinstance(name, str) else None
    if form is None:
        choices = ", ".join(f"{f.key} ({f.name})" for f in FORMS.values())
        raise UsageError(f"--form: unknown form {name!r}; choose one of {choices}")
    return form


_FORM_PATTERN = re.compile(r"(?:[^，。]+，[^，。]+。)+")


def form_of(poem: str) -> str | None:
    """The key of the regulated form `poem` is written in, or None.

    The poem must consist of 4 or 8 lines of 5 or 7 Han characters each (all lines the same
    length), lines alternately ended by ，and 。, nothing else (surrounding whitespace such as the
    trailing newline is ignored).
    """
    text = poem.strip()
    if not _FORM_PATTERN.fullmatch(text):
        return None
    lines = re.split("[，。]", text)[:-1]
    size = len(lines[0])
    if any(len(line) != size for line in lines) or not all_han("".join(lines)):
        return None
    for form in FORMS.values():
        if (form.chars, form.lines) == (size, len(lines)):
            return form.key
    return None


def poem_lines(poem: str) -> list[str]:
    """The verse lines of a poem (the characters between the marks, without the marks)."""
    return [line for line in re.split(r"[，。\s]+", poem) if line]


def corpus_lines(poems: Iterable[str]) -> set[str]:
    """Every verse line of every poem, e.g. the training corpus, for `poem_metrics` and
    `compose(forbid_corpus_lines=...)`."""
    lines: set[str] = set()
    for poem in poems:
        lines.update(poem_lines(poem))
    return lines


# -- constrained decoding -------------------------------------------------------------------


def _vocab_id(vocab, ch: str, what: str) -> int:
    """The id of a Han character the user asked for; UsageError naming the option otherwise."""
    if not is_han(ch):
        raise UsageError(f"{what}: {ch!r} is not a Han character")
    if ch not in vocab.index:
        raise UsageError(f"{what}: {ch!r} is not in the model's vocabulary; choose another character")
    return vocab.index[ch]


def _forced_slots(form: Form, vocab, acrostic: str | None, start: str,
                  forbid: set[str] | None) -> dict[int, int]:
    """Slot index -> id of the characters fixed in advance (line-end marks, acrostic, start).

    Slot s = line * (chars + 1) + column; column `chars` is the line's mark.
    """
    width = form.chars + 1
    for mark in (COMMA, PERIOD):
        if mark not in vocab.index:
            raise CharRNNError(f"the model's vocabulary lacks {mark!r}; composing poems needs a model "
                               "trained on poems such as corpora/tang")
    forced = {k * width + form.chars: vocab.index[COMMA if k % 2 == 0 else PERIOD]
              for k in range(form.lines)}
    if acrostic is not None:
        if not isinstance(acrostic, str) or len(acrostic) != form.lines:
            got = len(acrostic) if isinstance(acrostic, str) else repr(acrostic)
            raise UsageError(f"--acrostic needs exactly {form.lines} characters for {form.name} "
                             f"(one per line), got {got}")
        for k, ch in enumerate(acrostic):
            forced[k * width] = _vocab_id(vocab, ch, "--acrostic")
    if len(start) > form.chars:
        raise UsageError(f"--start must fit in the first line: at most {form.chars} characters "
                         f"for {form.name}, got {len(start)}")
    if acrostic is not None and start and start[0] != acrostic[0]:
        raise UsageError(f"--start must begin with the first --acrostic character {acrostic[0]!r}")
    if forbid and len(start) == form.chars and start in forbid:
        raise UsageError(f"--start {start!r} is a whole line of the training corpus, which the "
                         "ban on copied lines forbids; shorten it")
    for j, ch in enumerate(start):
        forced[j] = _vocab_id(vocab, ch, "--start")
    return forced


def _completions(forbid: set[str], form: Form, vocab) -> dict[str, np.ndarray]:
    """prefix of chars-1 characters -> ids whose addition would complete a forbidden line.

    Only lines of the form's length made of vocabulary characters can ever be generated, so the
    others are left out.
    """
    table: dict[str, list[int]] = {}
    index = vocab.index
    for line in forbid:
        if len(line) == form.chars and all(ch in index for ch in line):
            table.setdefault(line[:-1], []).append(index[line[-1]])
    return {prefix: np.array(ids, dtype=np.int64) for prefix, ids in table.items()}


class Composition(NamedTuple):
    """poems: the texts; nll: (num,) the model's mean negative log-likelihood of each poem, in
    nats per character (line-end marks included), from its unconstrained distribution."""

    poems: list[str]
    nll: np.ndarray


def compose(model, vocab, form: str, rng: np.random.Generator, **options) -> list[str]:
    """The poems of `compose_scored` (same arguments), without their scores."""
    return compose_scored(model, vocab, form, rng, **options).poems


def compose_scored(model, vocab, form: str, rng: np.random.Generator, *, num: int = 1,
                   temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
                   acrostic: str | None = None, start: str = "", tones: bool = False,
                   template: str | None = None, rhyme: bool = False, rhyme_scheme: str = "pingshui",
                   repeat_penalty: float = 0.0, best_of: int = 1,
                   forbid_corpus_lines: set[str] | None = None,
                   book: RhymeBook | None = None) -> Composition:
    """Write `num` poems in `form`, decoding them together through the batch dimension.

    model: has init_state(B) and step(ids (B,) int, state) -> (logits (B, V) float, state).
    vocab: has chars (id -> token) and index (token -> id), V entries. form: key or Chinese name.
    rng: the only source of randomness (same generator state -> same poems).
    temperature, top_k, top_p: as in `charrnn.sample.choose`, applied among the allowed ids.
    acrostic: one character per line (4 or 8), forced as the first character of each line.
    start: Han characters forced as the opening of the first line (at most one line).
    tones: every line follows its line type in one of the tone templates S1-S4 (or `template`
        alone), 孤平 and 三平尾 refused (see charrnn.prosody); the templates the poem so far
        still fits are all kept open. UsageError if the forced characters fit none.
    rhyme: the rhyming lines (the even ones, and the first when the template rhymes there) end
        in one rhyme group, no rhyme character used twice. rhyme_scheme: "pingshui" (平声
        groups of the 平水韵) or "shisan" (十三辙, each character's most common reading).
    repeat_penalty: subtracted from the logit of every character already in the poem (except
        the one just written, for 叠字 such as 悠悠); 0 = off.
    best_of: decode this many candidates per poem and keep the one the model finds likeliest
        (lowest mean NLL): fluency under the constraints.
    forbid_corpus_lines: verse lines (e.g. `corpus_lines(training poems)`) that must not be
        produced verbatim: at each line's last character the ids that would complete one are
        masked out.
    book: the rhyme book to use instead of the shipped one of rhyme_scheme.
    Returns the poems, each like 白日依山尽，黄河入海流。欲穷千里目，更上一层楼。 (no newline), with
    their NLLs.

    Whatever the model, the form is exact (Han characters of the vocabulary, the marks forced)
    and, with tones, so are the templates. Decoding starts after "\\n" (the end of the previous
    poem in the training text) when the vocabulary has it, else after "。", else after id 0. The
    soft constraints give way as charrnn.constraints says.
    """
    spec = get_form(form)
    check_sampling_options(temperature, top_k, top_p)
    check_count(num, "--num", minimum=1, maximum=MAX_SAMPLES)
    check_count(best_of, "--best-of", minimum=1, maximum=MAX_SAMPLES)
    if num * best_of > MAX_SAMPLES:
        raise UsageError(f"--num x --best-of must be at most {MAX_SAMPLES:,} (got {num * best_of:,})")
    if not (isinstance(repeat_penalty, (int, float)) and 0 <= repeat_penalty <= MAX_PENALTY):
        raise UsageError(f"--repeat-penalty must be in [0, {MAX_PENALTY:g}], got {repeat_penalty!r}")
    if check_template(template) and not tones:
        raise UsageError("--template needs --tones")
    if rhyme_scheme not in SCHEMES:
        raise UsageError(f"--rhyme-scheme: unknown scheme {rhyme_scheme!r}; choose one of {', '.join(SCHEMES)}")
    if tones and rhyme and rhyme_scheme != "pingshui":
        raise UsageError("--tones rhymes by the 平水韵; --rhyme-scheme shisan works without --tones")
    if not isinstance(start, str):
        raise UsageError("--start must be a string of Han characters")
    forced = _forced_slots(spec, vocab, acrostic, start, forbid_corpus_lines)
    tokens = list(vocab.chars)
    han = han_mask(tokens)
    if not han.any():
        raise CharRNNError("the model's vocabulary has no Han characters; composing poems needs "
                           "a model trained on poems such as corpora/tang")
    if tones or rhyme:
        book = book if book is not None else load_book("pingshui" if tones else rhyme_scheme)
        if rhyme_scheme == "shisan" and not tones:
            book = book.main_readings()
    templates = ([template] if template else list(TEMPLATES)) if tones else None
    if tones:
        known = {book.tone(t) for t, h in zip(tokens, han) if h}
        if not any(bits & PING for bits in known) or not any(bits & ZE for bits in known):
            raise CharRNNError("--tones: the model's vocabulary lacks characters of both tones (平 and 仄) "
                               "in the 平水韵 table; it cannot fill a tone template")
    rows = num * best_of
    limits = VerseConstraints(tokens, han, rows, spec.chars, spec.lines, templates=templates,
                              book=book, rhyme=rhyme)
    if tones:
        limits.restrict(templates_fitting_forced(forced, tokens, book, spec.chars, spec.lines, templates))
    completions = _completions(forbid_corpus_lines, spec, vocab) if forbid_corpus_lines else {}

    width = spec.chars + 1
    out = np.empty((rows, spec.lines * width), dtype=np.int64)
    written = np.zeros((rows, len(tokens)), dtype=bool)
    nll = np.zeros(rows)
    prev = np.full(rows, start_id(vocab, _POEM_START), dtype=np.int64)
    state = model.init_state(rows)
    all_rows = np.arange(rows)
    # One poem: the lean stepper (the same logits and draws), under one errstate for the poem.
    stream = one_stream(model, rows)
    with np.errstate(over="ignore") if stream is not None else contextlib.nullcontext():
        for slot in range(out.shape[1]):
            if stream is not None:
                logits = stream.step(int(prev[0]))
            else:
                logits, state = model.step(prev, state)
            line, column = divmod(slot, width)
            if slot in forced:
                prev = np.full(rows, forced[slot], dtype=np.int64)
            else:
                at_end = column == spec.chars - 1
                unbanned = (_unbanned(completions, out[:, slot - column:slot], tokens, han)
                            if at_end and completions else None)
                allowed = limits.allowed(line, column, unbanned)
                scored = logits
                if repeat_penalty:
                    penalised = written.copy()
                    if column > 0:
                        penalised[all_rows, prev] = False  # 叠字: the character just written may follow
                    scored = logits - np.float32(repeat_penalty) * penalised
                if stream is not None:
                    prev = np.array([stream.draw(scored, rng, temperature, top_k, top_p, allowed)])
                else:
                    prev = choose(scored, rng, temperature, top_k, top_p, allowed)
            nll -= _log_softmax_at(logits, prev)
            if column < spec.chars:
                limits.update(line, column, prev)
                written[all_rows, prev] = True
            out[:, slot] = prev
    nll /= out.shape[1]
    pick = np.arange(num) * best_of + nll.reshape(num, best_of).argmin(axis=1)
    return Composition(["".join(tokens[i] for i in out[b]) for b in pick], nll[pick])


def _log_softmax_at(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(B,) log p(ids) under softmax(logits (B, V)), in float64."""
    z = logits.astype(np.float64)
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return z[np.arange(len(ids)), ids] - log_norm


def _unbanned(completions: dict[str, np.ndarray], prefix: np.ndarray, tokens: list[str],
              han: np.ndarray) -> np.ndarray:
    """(B, V) bool: the ids that complete no forbidden line after each row's prefix (B, chars-1)."""
    unbanned = np.repeat(han[None, :], prefix.shape[0], axis=0)
    for b, ids in enumerate(prefix):
        banned = completions.get("".join(tokens[i] for i in ids))
        if banned is not None:
            unbanned[b, banned] = False
    return unbanned


def read_poems(path: str) -> list[str]:
    """Poems from a file: one per line, or blocks separated by blank lines (each block one poem,
    its line breaks and spaces removed)."""
    from charrnn.reading import read_text

    text = read_text(path)
    if "\n\n" in text.strip():
        return ["".join(block.split()) for block in text.split("\n\n") if block.strip()]
    return [line.strip() for line in text.splitlines() if line.strip()]


def couplets(poem: str) -> list[str]:
    """A poem cut after each 。: its couplets, for printing one per line."""
    return [c + PERIOD for c in poem.split(PERIOD) if c]
