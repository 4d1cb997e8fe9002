"""The four regulated forms of Tang verse: recognising them, measuring poems, composing them.

A poem is written as one line of text, its verse lines each ended by a full-width mark that
alternates ，(odd lines) and 。(even lines):

    白日依山尽，黄河入海流。欲穷千里目，更上一层楼。

    wujue  五言绝句  4 lines of 5 characters      wulv  五言律诗  8 lines of 5 characters
    qijue  七言绝句  4 lines of 7 characters      qilv  七言律诗  8 lines of 7 characters

`compose` drives any model with the `init_state` / `step` contract through one poem per batch
row and masks the logits so that the result is always in the requested form, whatever the model
says: Han characters where characters belong, the marks forced at line ends, optional acrostic
heads, primed opening characters, rhyme and a ban on lines copied from the training corpus.

Rhyme uses the table shipped as package data (charrnn/data/rhymes.json, built by
`charrnn.tang`): each character maps to the 十三辙 rhyme classes of all its modern readings,
that of its most common reading first. The metric counts a rhyme in any reading, as a reader
may; `--rhyme` writes rhymes in the most common readings only, so that 家 (jiā) is never made
to rhyme with 初 (chū) through its rare reading gū. This module needs NumPy only.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import NamedTuple

import numpy as np

from charrnn.errors import CharRNNError, UsageError
from charrnn.sample import MAX_SAMPLES, check_count, check_sampling_options, choose

COMMA, PERIOD = "，", "。"


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


# -- rhyme table -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _read_rhymes() -> tuple[tuple[str, ...], dict[str, tuple[int, ...]]]:
    """Parse charrnn/data/rhymes.json once: (group names, char -> group indices, main one first)."""
    res = resources.files("charrnn") / "data" / "rhymes.json"
    try:
        table = json.loads(res.read_text(encoding="utf-8"))
        groups = tuple(table["groups"])
        chars = {ch: tuple(int(g) for g in gs) for ch, gs in table["chars"].items() if gs}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CharRNNError(f"{res}: unreadable rhyme table ({exc}); reinstall charrnn") from None
    if any(not 0 <= g < len(groups) for gs in chars.values() for g in gs):
        raise CharRNNError(f"{res}: rhyme group index out of range; reinstall charrnn")
    return groups, chars


def load_rhymes() -> dict[str, frozenset[int]]:
    """character -> indices of the rhyme groups of all its readings (package data).

    A character absent from the table has no known reading and rhymes with nothing.
    """
    return {ch: frozenset(gs) for ch, gs in _read_rhymes()[1].items()}


def load_main_rhymes() -> dict[str, frozenset[int]]:
    """character -> the rhyme group of its most common reading (package data), as a 1-set."""
    return {ch: frozenset(gs[:1]) for ch, gs in _read_rhymes()[1].items()}


def rhymes_with(ends: Iterable[str], rhymes: Mapping[str, frozenset[int]]) -> bool:
    """True if all the characters share at least one rhyme group (any of their readings)."""
    common: frozenset[int] | None = None
    for ch in ends:
        groups = rhymes.get(ch, frozenset())
        common = groups if common is None else common & groups
        if not common:
            return False
    return common is not None


# -- metrics --------------------------------------------------------------------------------


def poem_metrics(poems: list[str], corpus_lines: set[str] | None = None, *,
                 rhymes: Mapping[str, frozenset[int]] | None = None) -> dict:
    """How well a set of poems keeps the forms, rhymes and avoids copying.

    poems: one string per poem. corpus_lines: verse lines of the training corpus (see
    `corpus_lines`), or None to skip the copy measure. rhymes: the rhyme table (default: the
    shipped one).

    Returns a dict:
      poems     number of poems
      valid     share of poems in one of the four forms
      forms     {form key: share of poems in that form}
      rhyme     among poems in a valid form, the share whose even lines' last characters share a
                rhyme group (a character missing from the table rhymes with nothing); 0.0 if none
      lines     number of verse lines of the valid poems (the line measures below use these)
      copied    share of those lines found verbatim in corpus_lines (None without corpus_lines)
      distinct  number of distinct lines / number of lines (0.0 if no lines)
    """
    rhymes = load_rhymes() if rhymes is None else rhymes
    counts = dict.fromkeys(FORMS, 0)
    rhymed = 0
    lines: list[str] = []
    for poem in poems:
        key = form_of(poem)
        if key is None:
            continue
        counts[key] += 1
        verse = poem_lines(poem)
        rhymed += rhymes_with((line[-1] for line in verse[1::2]), rhymes)
        lines.extend(verse)
    valid = sum(counts.values())
    return {
        "poems": len(poems),
        "valid": valid / len(poems) if poems else 0.0,
        "forms": {key: n / len(poems) if poems else 0.0 for key, n in counts.items()},
        "rhyme": rhymed / valid if valid else 0.0,
        "lines": len(lines),
        "copied": (None if corpus_lines is None
                   else (sum(line in corpus_lines for line in lines) / len(lines) if lines else 0.0)),
        "distinct": len(set(lines)) / len(lines) if lines else 0.0,
    }


# -- constrained decoding -------------------------------------------------------------------


class _Masks:
    """Per-vocabulary masks, computed once per `compose` call.

    han: (V,) bool, Han characters. groups: (V, G) bool, rhyme groups of each id (all False for
    ids without a known reading); G = number of rhyme groups, 0 when rhyme is off.
    """

    def __init__(self, chars: list[str], rhymes: Mapping[str, frozenset[int]] | None):
        self.han = han_mask(chars)
        n_groups = 1 + max((g for gs in rhymes.values() for g in gs), default=-1) if rhymes else 0
        self.groups = np.zeros((len(chars), n_groups), dtype=bool)
        if rhymes:
            for i in np.flatnonzero(self.han):
                self.groups[i, sorted(rhymes.get(chars[i], ()))] = True
        self.groups_f = self.groups.astype(np.float32)


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


def compose(model, vocab, form: str, rng: np.random.Generator, *, num: int = 1,
            temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
            acrostic: str | None = None, start: str = "", rhyme: bool = False,
            forbid_corpus_lines: set[str] | None = None,
            rhymes: Mapping[str, frozenset[int]] | None = None) -> list[str]:
    """Write `num` poems in `form`, decoding them together through the batch dimension.

    model: has init_state(B) and step(ids (B,) int, state) -> (logits (B, V) float, state).
    vocab: has chars (id -> token) and index (token -> id), V entries. form: key or Chinese name.
    rng: the only source of randomness (same generator state -> same poems).
    temperature, top_k, top_p: as in `charrnn.sample.choose`, applied among the allowed ids.
    acrostic: one character per line (4 or 8), forced as the first character of each line.
    start: Han characters forced as the opening of the first line (at most one line).
    rhyme: the last characters of the even lines share a rhyme group, and no rhyme character is
        used twice in a poem (as regulated verse avoids).
    forbid_corpus_lines: verse lines (e.g. `corpus_lines(training poems)`) that must not be
        produced verbatim: at each line's last character the ids that would complete one are
        masked out.
    rhymes: the groups each character may rhyme in (default: `load_main_rhymes()`, the group
        of each character's most common reading).
    Returns `num` poems, each like 白日依山尽，黄河入海流。欲穷千里目，更上一层楼。 (no newline).

    Whatever the model, the form is exact: characters are Han characters of the vocabulary and
    the marks are forced. Decoding starts after "\\n" (the end of the previous poem in the
    training text) when the vocabulary has it, else after "。", else after id 0.

    The soft constraints give way, per poem, only when the vocabulary leaves no character that
    satisfies them all, in this order: first the ban on repeating a rhyme character, then the
    rhyme, then the ban on copied lines; the form itself never gives way.
    """
    spec = get_form(form)
    check_sampling_options(temperature, top_k, top_p)
    check_count(num, "--num", minimum=1, maximum=MAX_SAMPLES)
    if not isinstance(start, str):
        raise UsageError("--start must be a string of Han characters")
    forced = _forced_slots(spec, vocab, acrostic, start, forbid_corpus_lines)
    if rhyme and rhymes is None:
        rhymes = load_main_rhymes()
    masks = _Masks(list(vocab.chars), rhymes if rhyme else None)
    if not masks.han.any():
        raise CharRNNError("the model's vocabulary has no Han characters; composing poems needs "
                           "a model trained on poems such as corpora/tang")
    completions = _completions(forbid_corpus_lines, spec, vocab) if forbid_corpus_lines else {}

    width = spec.chars + 1
    out = np.empty((num, spec.lines * width), dtype=np.int64)
    rows = np.arange(num)
    live = np.ones((num, masks.groups.shape[1]), dtype=bool)  # rhyme groups still shared
    used = np.zeros((num, len(masks.han)), dtype=bool)        # rhyme characters already used
    prev = np.full(num, _start_id(vocab), dtype=np.int64)
    state = model.init_state(num)
    for slot in range(out.shape[1]):
        logits, state = model.step(prev, state)
        line, column = divmod(slot, width)
        if slot in forced:
            prev = np.full(num, forced[slot], dtype=np.int64)
        elif column < spec.chars - 1:
            prev = choose(logits, rng, temperature, top_k, top_p, masks.han)
        else:
            even = rhyme and line % 2 == 1
            allowed = _line_end_mask(masks, vocab, out[:, slot - column:slot], completions,
                                     live if even else None, used if even else None)
            prev = choose(logits, rng, temperature, top_k, top_p, allowed)
        if rhyme and line % 2 == 1 and column == spec.chars - 1:
            live &= masks.groups[prev]
            used[rows, prev] = True
        out[:, slot] = prev
    chars = vocab.chars
    return ["".join(chars[i] for i in row) for row in out]


def _start_id(vocab) -> int:
    """The id fed before the first character: the end of the previous poem."""
    for ch in ("\n", PERIOD):
        if ch in vocab.index:
            return vocab.index[ch]
    return 0


def _line_end_mask(masks: _Masks, vocab, prefix: np.ndarray, completions: dict[str, np.ndarray],
                   live: np.ndarray | None, used: np.ndarray | None) -> np.ndarray:
    """(B, V) bool: the ids allowed as the last character of a line.

    prefix: (B, chars-1) ids of the line so far. live: (B, G) rhyme groups the poem's even-line
    ends still share, used: (B, V) rhyme characters already used; both None away from rhyme
    positions. Masks are tried strongest first; a row with nothing allowed takes the next one.
    """
    num = prefix.shape[0]
    fallbacks = [np.broadcast_to(masks.han, (num, masks.han.size))]
    if completions:
        unbanned = np.repeat(masks.han[None, :], num, axis=0)
        chars = vocab.chars
        for b in range(num):
            banned = completions.get("".join(chars[i] for i in prefix[b]))
            if banned is not None:
                unbanned[b, banned] = False
        fallbacks.append(unbanned)
    if live is not None:
        # A character rhymes if one of its groups is among the groups still shared.
        rhyming = (live.astype(np.float32) @ masks.groups_f.T > 0) & fallbacks[-1]
        fallbacks += [rhyming, rhyming & ~used]
    allowed = fallbacks.pop().copy()
    for weaker in reversed(fallbacks):
        empty = ~allowed.any(axis=1)
        if not empty.any():
            break
        allowed[empty] = weaker[empty]
    return allowed
