"""Measuring poems by the standard of Tang regulated verse: form, tones, rhyme, repeats, copies.

`poem_metrics` grades a set of poems, per form and overall, by the 平水韵 (charrnn.prosody):
template fit by the lenient rules (free positions free, 特拗 accepted, a character with both
readings fitting either), the rules behind the templates one by one, rhyme in a 平声 group,
and, as a second figure, rhyme under the modern 十三辙. This module needs NumPy only.
"""

from __future__ import annotations

from collections import Counter

from charrnn.poetry import FORMS, form_of, poem_lines
from charrnn.prosody import RhymeBook, common_rhyme, fitting_templates, load_book, rule_checks

RATES = ("template", "dui", "nian", "level_ends", "rhyme", "first_line_rhyme", "repeated_rhyme",
         "repeated_char", "rhyme_shisan")


def _rhyme_chars(lines: list[str], pingshui: RhymeBook) -> tuple[bool, bool, bool]:
    """(even lines rhyme, the first line rhymes with them, a rhyme character repeats)."""
    ends = [line[-1] for line in lines[1::2]]
    shared = common_rhyme(ends, pingshui)
    first = bool(shared & pingshui.rhyme_groups(lines[0][-1]))
    used = ends + ([lines[0][-1]] if first else [])
    return bool(shared), first, len(set(used)) < len(used)


def scan(poem: str, pingshui: RhymeBook, shisan: RhymeBook) -> dict[str, bool] | None:
    """The rates' verdicts for one poem (None if it is in none of the four forms)."""
    if form_of(poem) is None:
        return None
    lines = poem_lines(poem)
    rhymes, first, repeated = _rhyme_chars(lines, pingshui)
    chars = Counter("".join(lines))
    return {"template": bool(fitting_templates(lines, pingshui)), **rule_checks(lines, pingshui),
            "rhyme": rhymes, "first_line_rhyme": first, "repeated_rhyme": repeated,
            "repeated_char": max(chars.values()) > 1,
            "rhyme_shisan": bool(common_rhyme([line[-1] for line in lines[1::2]], shisan))}


def poem_metrics(poems: list[str], corpus_lines: set[str] | None = None, *,
                 pingshui: RhymeBook | None = None, shisan: RhymeBook | None = None) -> dict:
    """How well a set of poems keeps the forms, the tones and the rhyme, and avoids copying.

    poems: one string per poem. corpus_lines: verse lines of the training corpus (see
    `charrnn.poetry.corpus_lines`), or None to skip the copy measure. pingshui, shisan: the rhyme
    books (default: the shipped ones).

    Returns a dict:
      poems     number of poems
      valid     share of poems in one of the four forms
      forms     {form key: share of poems in that form}
      lines     number of verse lines of the valid poems (the line measures below use these)
      copied    share of those lines found verbatim in corpus_lines (None without corpus_lines)
      distinct  number of distinct lines / number of lines (0.0 if no lines)
      overall   {rate: share of the valid poems}, rates as in RATES:
                template (fits S1-S4), dui (对), nian (粘), level_ends (even lines end 平),
                rhyme (even lines share a 平水韵 平声 group), first_line_rhyme (line 1 too),
                repeated_rhyme (重韵), repeated_char (a character appears twice),
                rhyme_shisan (even lines share a 十三辙 class in any reading)
      by_form   {form key: {"poems": n, rate: share}} for the forms that occur
    """
    pingshui = load_book("pingshui") if pingshui is None else pingshui
    shisan = load_book("shisan") if shisan is None else shisan
    verdicts: dict[str, list[dict[str, bool]]] = {key: [] for key in FORMS}
    lines: list[str] = []
    for poem in poems:
        verdict = scan(poem, pingshui, shisan)
        if verdict is not None:
            verdicts[form_of(poem)].append(verdict)
            lines.extend(poem_lines(poem))
    valid = [v for found in verdicts.values() for v in found]

    def rates(found: list[dict[str, bool]]) -> dict[str, float]:
        return {rate: sum(v[rate] for v in found) / len(found) if found else 0.0 for rate in RATES}

    n = len(poems)
    return {
        "poems": n,
        "valid": len(valid) / n if n else 0.0,
        "forms": {key: len(found) / n if n else 0.0 for key, found in verdicts.items()},
        "lines": len(lines),
        "copied": (None if corpus_lines is None
                   else (sum(line in corpus_lines for line in lines) / len(lines) if lines else 0.0)),
        "distinct": len(set(lines)) / len(lines) if lines else 0.0,
        "overall": rates(valid),
        "by_form": {key: {"poems": len(found), **rates(found)} for key, found in verdicts.items() if found},
    }


_RATE_LINES = (("template", "template fit", "fits a tone template S1-S4 (平水韵, lenient)"),
               ("nian", "粘", "position 2 of lines 3, 5, 7 as the line before"),
               ("dui", "对", "positions 2, 4, 6 opposite within each couplet"),
               ("level_ends", "平 at even ends", "every even line ends in a 平 character"),
               ("rhyme", "rhyme 平水韵", "even lines share a 平声 group"),
               ("first_line_rhyme", "first line rhymes", "line 1 ends in that group too"),
               ("repeated_rhyme", "重韵", "a rhyme character used twice"),
               ("repeated_char", "repeated char", "a character appears twice or more"),
               ("rhyme_shisan", "rhyme 十三辙", "even lines share a modern class, any reading"))


def metrics_table(m: dict) -> str:
    """poem_metrics' result as the table `charrnn poem-metrics` prints: rates overall and by form."""
    out = [f"poems              {m['poems']}"]
    out.append(f"valid form         {m['valid']:.1%}  ("
               + ", ".join(f"{FORMS[k].name} {v:.1%}" for k, v in m["forms"].items()) + ")")
    keys = list(m["by_form"])
    out.append(f"{'':19}{'all':>7}" + "".join(f"{k:>7}" for k in keys))
    for rate, name, meaning in _RATE_LINES:
        wide = sum(1 for ch in name if ord(ch) > 0x2E7F)  # a Han character takes two columns
        out.append(f"{name:<{19 - wide}}{m['overall'][rate]:>7.1%}"
                   + "".join(f"{m['by_form'][k][rate]:>7.1%}" for k in keys) + f"  {meaning}")
    out.append(f"copied lines       {'n/a (no --corpus)' if m['copied'] is None else format(m['copied'], '.1%')}")
    out.append(f"distinct lines     {m['distinct']:.1%}  of {m['lines']}")
    return "\n".join(out)
