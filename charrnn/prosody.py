"""The sound of regulated verse: rhyme books, 平仄 tones and the four tone templates.

A rhyme book maps each character to the rhyme groups of its readings. Two ship as package data
(built by `charrnn.tang`):

    pingshui  charrnn/data/pingshui.json   the 平水韵, the book Tang poets rhymed by: 106 groups,
                                            each of one tone, 平 上 去 入 (上 去 入 are 仄)
    shisan    charrnn/data/shisan.json     the 十三辙 of modern Mandarin finals, no tones

A character with readings in both 平 and 仄 groups (看 长 行 ...) fits either tone; one with
no entry has no known tone and fits no fixed position.

The templates (P 平, Z 仄, * either), as five-character line types; a seven-character line puts
two characters in front, the second of the opposite tone to the five-character line's second:

    a  *Z*PZ                    ends 仄
    b  PP*ZP or ZPPZP           ends 平 (rhymes); 孤平: position 1 仄 needs position 3 平
    c  *P*ZZ or PPZPZ (特拗)    ends 仄
    d  *ZZPP                    ends 平 (rhymes); position 3 仄 avoids 三平尾

    template  绝句  律诗       first line rhymes
    S1        abcd  abcdabcd   no
    S2        dbcd  dbcdabcd   yes
    S3        cdab  cdabcdab   no
    S4        bdab  bdabcdab   yes

Behind the templates: in a couplet positions 2, 4 (6) have opposite tones (对); position 2 of
lines 3, 5, 7 has the tone of the line before (粘); even lines end in 平 characters of one
平声 group; the same character never rhymes twice (重韵). This module needs NumPy only.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import NamedTuple

import numpy as np

from charrnn.errors import CharRNNError, UsageError

PING, ZE = 1, 2  # tone bits of a character: 平, 仄, both (3) or unknown (0)
LEVEL = "平"
SCHEMES = {"pingshui": "pingshui.json", "shisan": "shisan.json"}

_LINE_TYPES_5 = {"a": ("*Z*PZ",), "b": ("PP*ZP", "ZPPZP"), "c": ("*P*ZZ", "PPZPZ"), "d": ("*ZZPP",)}
_QUATRAIN = {"S1": "abcd", "S2": "dbcd", "S3": "cdab", "S4": "bdab"}
_REGULATED_SECOND_HALF = {"S1": "abcd", "S2": "abcd", "S3": "cdab", "S4": "cdab"}
TEMPLATES = tuple(_QUATRAIN)


class RhymeBook(NamedTuple):
    """scheme: "pingshui" or "shisan"; groups: group names; tones: per group 平 上 去 入 ("" in
    a book without tones); chars: character -> indices of its groups (in the 十三辙 the group
    of its most common reading first)."""

    scheme: str
    groups: tuple[str, ...]
    tones: tuple[str, ...]
    chars: dict[str, tuple[int, ...]]

    def main_readings(self) -> RhymeBook:
        """The book with each character in the group of its first listed reading only: how the
        十三辙 is written, so that 家 (jiā) is never made to rhyme with 初 through gū."""
        return self._replace(chars={ch: gs[:1] for ch, gs in self.chars.items()})

    def tone(self, ch: str) -> int:
        """PING | ZE bits of a character's readings (0: no entry, or a book without tones)."""
        bits = 0
        for g in self.chars.get(ch, ()):
            bits |= PING if self.tones[g] == LEVEL else ZE if self.tones[g] else 0
        return bits

    def rhyme_groups(self, ch: str) -> frozenset[int]:
        """The groups a character rhymes in: its 平 groups in the 平水韵, all in the 十三辙."""
        groups = self.chars.get(ch, ())
        return frozenset(g for g in groups if not any(self.tones) or self.tones[g] == LEVEL)


@functools.lru_cache(maxsize=None)
def load_book(scheme: str = "pingshui") -> RhymeBook:
    """The rhyme book shipped as package data; UsageError for an unknown scheme."""
    if scheme not in SCHEMES:
        raise UsageError(f"--rhyme-scheme: unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    res = resources.files("charrnn") / "data" / SCHEMES[scheme]
    try:
        table = json.loads(res.read_text(encoding="utf-8"))
        groups = tuple(table["groups"])
        tones = tuple(table.get("tones", [""] * len(groups)))
        chars = {ch: tuple(int(g) for g in gs) for ch, gs in table["chars"].items() if gs}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CharRNNError(f"{res}: unreadable rhyme table ({exc}); reinstall charrnn") from None
    if len(tones) != len(groups) or any(not 0 <= g < len(groups) for gs in chars.values() for g in gs):
        raise CharRNNError(f"{res}: rhyme group index out of range; reinstall charrnn")
    return RhymeBook(scheme, groups, tones, chars)


def line_patterns(kind: str, chars: int) -> tuple[str, ...]:
    """The P/Z/* patterns a line of type a, b, c or d may follow, for 5 or 7 characters."""
    patterns = _LINE_TYPES_5[kind]
    if chars == 5:
        return patterns
    return tuple("*" + ("Z" if p[1] == "P" else "P") + p for p in patterns)


def template_lines(template: str, lines: int) -> str:
    """The line types of a template for a 4-line (绝句) or 8-line (律诗) poem, e.g. "abcd"."""
    return _QUATRAIN[template] + (_REGULATED_SECOND_HALF[template] if lines == 8 else "")


def check_template(name: str | None) -> str | None:
    """A template name (S1-S4) or None; UsageError otherwise."""
    if name is not None and name not in _QUATRAIN:
        raise UsageError(f"--template: unknown template {name!r}; choose one of {', '.join(TEMPLATES)}")
    return name


def rhyming_lines(template: str | None, lines: int) -> list[int]:
    """0-based indices of the lines that rhyme: the even lines, and the first when the template
    ends it in 平 (S2, S4); without a template (None) the even lines only."""
    first = template is not None and template_lines(template, lines)[0] in "bd"
    return ([0] if first else []) + list(range(1, lines, 2))


def fits(tones: list[int], pattern: str) -> bool:
    """True if characters of these tone bits can be read in the pattern (P, Z or * each)."""
    return all(p == "*" or (t & (PING if p == "P" else ZE)) for t, p in zip(tones, pattern))


def graded_tones(line: str, book: RhymeBook) -> list[int]:
    """Tone bits of a line's characters for grading a poem: a character with no entry (0.5% of
    the corpus's tokens, mostly variants that OpenCC leaves unfolded, 疎 劒 猨) is not graded
    and fits either tone. The decoder, stricter, never writes one where a tone is fixed."""
    return [book.tone(ch) or PING | ZE for ch in line]


def fitting_templates(lines: list[str], book: RhymeBook) -> list[str]:
    """The templates (S1-S4) every line of the poem fits; [] if none."""
    tones = [graded_tones(line, book) for line in lines]
    found = []
    for template in TEMPLATES:
        kinds = template_lines(template, len(lines))
        if all(any(fits(t, p) for p in line_patterns(kind, len(t))) for t, kind in zip(tones, kinds)):
            found.append(template)
    return found


def _opposite(a: int, b: int) -> bool:
    return bool((a & PING and b & ZE) or (a & ZE and b & PING))


def rule_checks(lines: list[str], book: RhymeBook) -> dict[str, bool]:
    """The rules behind the templates, each True if the whole poem keeps it: dui (对: positions
    2, 4, 6 opposite within each couplet), nian (粘: position 2 of lines 3, 5, 7 as the line
    before), level_ends (every even line ends in a character that can be 平)."""
    tones = [graded_tones(line, book) for line in lines]
    fixed = range(1, len(lines[0]), 2)
    dui = all(_opposite(tones[k][j], tones[k + 1][j]) for k in range(0, len(lines), 2) for j in fixed)
    nian = all(tones[k][1] & tones[k - 1][1] for k in range(2, len(lines), 2))
    level_ends = all(tones[k][-1] & PING for k in range(1, len(lines), 2))
    return {"dui": dui, "nian": bool(nian), "level_ends": level_ends}


def common_rhyme(ends: list[str], book: RhymeBook) -> frozenset[int]:
    """The rhyme groups all these characters share (their 平 groups in the 平水韵)."""
    common: frozenset[int] | None = None
    for ch in ends:
        groups = book.rhyme_groups(ch)
        common = groups if common is None else common & groups
        if not common:
            return frozenset()
    return common or frozenset()


def pattern_table(chars: int, lines: int, templates: list[str] | None):
    """(T, lines, 2, chars) int8 codes of the patterns each template allows on each line:
    0 either tone, PING, ZE, or -1 where a line type has only one pattern. templates None: one
    template with every position free (rhyme without tones)."""
    code = {"*": 0, "P": PING, "Z": ZE}
    if templates is None:
        table = np.full((1, lines, 2, chars), -1, dtype=np.int8)
        table[:, :, 0, :] = 0
        return table
    table = np.full((len(templates), lines, 2, chars), -1, dtype=np.int8)
    for t, template in enumerate(templates):
        for k, kind in enumerate(template_lines(template, lines)):
            for p, pattern in enumerate(line_patterns(kind, chars)):
                table[t, k, p] = [code[c] for c in pattern]
    return table
