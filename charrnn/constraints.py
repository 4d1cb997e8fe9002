"""What each poem being decoded may write next: tone templates, rhyme, copy ban, repeats.

`VerseConstraints` follows B poems through one form, slot by slot, as `charrnn.poetry.compose`
writes them. For every row it keeps the (template, line pattern) pairs the poem so far still
fits (so a character with both readings keeps both paths open), each template's rhyme groups
still shared by its rhyming line ends, the rhyme characters used and the characters written.

Hard: the tones. With tones on, a character is allowed only if some live pattern allows its
tone there; a position that every live pattern leaves free takes any Han character, a fixed one
only characters with a known tone. As long as the vocabulary has characters of both tones, some
pattern always stays alive, so every poem fits a template whatever the model.
Soft, giving way in this order when a row would have nothing left at a line end: the ban on
rhyming a character twice, the rhyme, the ban on copied lines.
"""

from __future__ import annotations

import numpy as np

from charrnn.errors import UsageError
from charrnn.prosody import PING, ZE, RhymeBook, pattern_table, rhyming_lines

_FREE = 4  # code bit: some live pattern leaves the position free


class VerseConstraints:
    """rows poems of `lines` lines of `chars` characters over a vocabulary `tokens` (V).

    templates: the tone templates to keep (e.g. ["S1", ..., "S4"]), or None for no tones.
    book: the rhyme book for tones and rhyme (its tones are read only with templates).
    rhyme: make the rhyming lines share a group (None book -> no rhyme).
    """

    def __init__(self, tokens: list[str], han: np.ndarray, rows: int, chars: int, lines: int, *,
                 templates: list[str] | None, book: RhymeBook | None, rhyme: bool):
        self.chars, self.lines, self.templates = chars, lines, templates
        self.han = han                                               # (V,) bool
        self.bits = np.array([book.tone(t) if (templates and h) else 0 for t, h in zip(tokens, han)],
                             dtype=np.uint8)                         # (V,) PING | ZE
        can_p, can_z = (self.bits & PING) > 0, (self.bits & ZE) > 0
        # by code (free, P, Z bits): which ids a position with those requirements allows
        self.by_code = np.stack([han & ((code & _FREE > 0) | ((code & PING > 0) & can_p)
                                        | ((code & ZE > 0) & can_z)) for code in range(8)])
        self.pattern = pattern_table(chars, lines, templates)        # (T, lines, 2, chars)
        n_templates = self.pattern.shape[0]
        self.rhymes_on = np.zeros((n_templates, lines), dtype=bool)  # which lines rhyme, per template
        self.rhyme = rhyme and book is not None
        if self.rhyme:
            for t in range(n_templates):
                self.rhymes_on[t, rhyming_lines(templates[t] if templates else None, lines)] = True
            names = sorted({g for t in tokens for g in book.rhyme_groups(t)})
            column = {g: k for k, g in enumerate(names)}
            self.groups = np.zeros((len(tokens), len(names)), dtype=bool)  # (V, G)
            for i, token in enumerate(tokens):
                if han[i]:
                    self.groups[i, [column[g] for g in book.rhyme_groups(token)]] = True
            self.groups_f = self.groups.astype(np.float32)
            self.live = np.ones((rows, n_templates, len(names)), dtype=bool)  # (B, T, G)
        self.used = np.zeros((rows, len(tokens)), dtype=bool)        # rhyme characters used
        self.alive = np.zeros((rows, n_templates, 2), dtype=bool)    # (B, T, 2) patterns of the line
        self.start_line(0, np.ones((rows, n_templates), dtype=bool))

    def start_line(self, line: int, templates_alive: np.ndarray) -> None:
        exists = self.pattern[:, line, :, 0] >= 0                    # (T, 2)
        self.alive = templates_alive[:, :, None] & exists[None]

    def restrict(self, keep: np.ndarray) -> None:
        """Keep only the templates where keep (T,) is True (a fixed template, forced characters)."""
        self.alive &= keep[None, :, None]

    def _codes(self, line: int, column: int) -> np.ndarray:
        """(B, T) code of what each row's live patterns of each template require here."""
        req = self.pattern[:, line, :, column]                      # (T, 2)
        free = (self.alive & (req == 0)).any(2)
        ping = (self.alive & (req == PING)).any(2)
        ze = (self.alive & (req == ZE)).any(2)
        return (free * _FREE) | (ping * PING) | (ze * ZE)

    def allowed(self, line: int, column: int, unbanned: np.ndarray | None) -> np.ndarray:
        """(B, V) bool: the ids each row may write at this slot. unbanned: (B, V) ids that
        complete no forbidden line (line ends only), or None."""
        codes = self._codes(line, column)                            # (B, T)
        tone_ok = self.by_code[np.bitwise_or.reduce(codes, axis=1)]  # (B, V)
        if column < self.chars - 1:
            return tone_ok
        fallbacks = [tone_ok]
        if unbanned is not None:
            fallbacks.append(tone_ok & unbanned)
        if self.rhyme and self.rhymes_on[:, line].any():
            rhyming = np.zeros_like(tone_ok)
            for t in range(codes.shape[1]):
                mask = self.by_code[codes[:, t]]
                if self.rhymes_on[t, line]:
                    mask = mask & (self.live[:, t].astype(np.float32) @ self.groups_f.T > 0)
                rhyming |= mask
            rhyming &= fallbacks[-1]
            fallbacks += [rhyming, rhyming & ~self.used]
        allowed = fallbacks.pop().copy()
        for weaker in reversed(fallbacks):
            empty = ~allowed.any(axis=1)
            if not empty.any():
                break
            allowed[empty] = weaker[empty]
        return allowed

    def update(self, line: int, column: int, ids: np.ndarray) -> None:
        """Rows wrote ids (B,) at this slot: drop the patterns (and rhymes) they left."""
        req = self.pattern[:, line, :, column][None]                 # (1, T, 2)
        bits = self.bits[ids][:, None, None]
        self.alive &= (req == 0) | ((req == PING) & (bits & PING > 0)) | ((req == ZE) & (bits & ZE > 0))
        if column < self.chars - 1:
            return
        if self.rhyme and self.rhymes_on[:, line].any():
            rows = np.arange(len(ids))
            shared = self.live & self.groups[ids][:, None, :]        # (B, T, G)
            on = self.rhymes_on[:, line][None]                       # (1, T)
            rhymes = shared.any(2) | ~on                             # (B, T) the template still rhymes
            templates = self.alive.any(2)
            keep = np.where((templates & rhymes).any(1, keepdims=True), rhymes, True)
            self.alive &= keep[:, :, None]
            self.live = np.where(on[:, :, None] & shared.any(2, keepdims=True), shared, self.live)
            rhymed = (self.alive.any(2) & on).any(1)  # a live template rhymes here: a rhyme character
            self.used[rows[rhymed], ids[rhymed]] = True
        if line + 1 < self.lines:
            self.start_line(line + 1, self.alive.any(2))


def templates_fitting_forced(forced: dict[int, int], tokens: list[str], book: RhymeBook,
                             chars: int, lines: int, templates: list[str]) -> np.ndarray:
    """(T,) bool: the templates that the characters fixed in advance (acrostic, start) allow;
    forced maps slot (line * (chars + 1) + column) -> id. UsageError if none does."""
    pattern = pattern_table(chars, lines, templates)
    ok = np.ones(len(templates), dtype=bool)
    for t in range(len(templates)):
        for line in range(lines):
            here = [(slot % (chars + 1), i) for slot, i in forced.items()
                    if slot // (chars + 1) == line and slot % (chars + 1) < chars]
            if not here:
                continue
            fits_one = False
            for p in range(2):
                row = pattern[t, line, p]
                if row[0] < 0:
                    continue
                fits_one |= all(row[j] == 0 or (book.tone(tokens[i]) & row[j]) for j, i in here)
            ok[t] &= fits_one
    if not ok.any():
        given = "".join(tokens[i] for slot, i in sorted(forced.items()) if slot % (chars + 1) < chars)
        raise UsageError(f"--acrostic/--start: the characters {given} fit none of the tone templates "
                         f"{', '.join(templates)} at their places (a character with no known tone "
                         "cannot stand where the tone is fixed); choose others or drop --tones")
    return ok
