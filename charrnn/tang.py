"""Preparing the Tang-poem training corpus and the rhyme table from the chinese-poetry JSON files.

`prepare_tang(raw_dir, out_dir)` reads every poet.tang.N.json (in the database's own order, by
N), cleans each poem, keeps the ones written in one of the four regulated forms of
`charrnn.poetry`, converts them to simplified characters, drops repeated bodies and writes

    out_dir/train.txt.gz, out_dir/val.txt.gz   one poem body per line, e.g.
                                               白日依山尽，黄河入海流。欲穷千里目，更上一层楼。
    out_dir/README.md                          counts, source, license, the command that made it
    out_dir/LICENSE                            the database's MIT license (it must ship with it)

and, when asked, the rhyme tables `charrnn/data/pingshui.json` (平水韵, see `charrnn.pingshui`)
and `charrnn/data/shisan.json` (十三辙). The output is byte-identical from
run to run (fixed split seed, gzip without timestamp or file name, sorted tables).

Cleaning one poem (the paragraphs joined):
  - editorial notes and variant readings in （…） or (…) are removed, innermost first, so nested
    notes go too; 〖n〗 footnote marks are removed;
  - [x] / ［x］ (characters restored by the editors) keep x; quotes 「」『』“”‘’ and book-title
    marks 《》〈〉 are dropped (their content stays);
  - a poem with anything else left that is neither a Han character nor punctuation is dropped:
    □ (lost characters), {…} (descriptions of characters Unicode cannot encode), ○, ●, digits,
    letters, private-use code points, an unbalanced bracket;
  - the text is cut at every mark among ，。？！；：、 (and their ASCII forms); runs of marks left
    where a note was removed count as one. The poem is kept if it has 4 or 8 pieces of 5 or 7
    Han characters, all the same length. Which mark ends a line reflects an editor's reading of
    the sentence, not the form (清明's third line ends with ？ in some editions), so the marks are
    then rewritten by position: ，after odd lines, 。after even lines.

OpenCC (t2s) converts to simplified characters, pypinyin gives the readings for the 十三辙 table
and two rhyme-book packages the 平水韵; all are needed only here, installed with
`pip install 'charrnn[tang]'`.

The 十三辙 table groups every character of the corpus by the 十三辙, the thirteen rhyme classes
of modern Chinese (folk song, opera), over all its readings (pypinyin, heteronyms, finals in the
strict scheme where ü is written v, tones ignored), the class of its most common reading first.
The finals -> 辙 mapping:

    中东辙  eng ing ong iong ueng         江阳辙  ang iang uang
    一七辙  i v er                        灰堆辙  ei uei
    油求辙  ou iou                        梭波辙  o e uo io
    人辰辙  en in uen vn                  言前辙  an ian uan van
    发花辙  a ia ua                       乜斜辙  ie ve ê
    怀来辙  ai uai                        姑苏辙  u
    遥条辙  ao iao

The final i covers both the true i (衣, 七) and the apical vowels after z c s and zh ch sh r
(子, 知, 日): 十三辙 rhymes them all in 一七辙 (unlike the 中华新韵, which splits off 支 and 儿).
The strict scheme matters: with it 鱼 has final v (一七辙), whereas loosely written as u it
would land in 姑苏辙. Syllabic nasals (嗯 n, 呣 m) have no final and no group.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from charrnn.errors import CharRNNError, UsageError
from charrnn.pingshui import SOURCES, Source, build_pingshui, read_sources, write_table
from charrnn.poetry import COMMA, FORMS, HAN_CLASS, PERIOD, all_han, form_of, is_han

SOURCE = ("chinese-poetry database, npm package chinese-poetry 2.0.1, folder dist/quantangshi "
          "(https://github.com/chinese-poetry/chinese-poetry), MIT license")
INSTALL_HINT = "pip install 'charrnn[tang]'"

RHYME_SCHEME = "十三辙 (pypinyin finals)"
RHYME_CLASSES: dict[str, tuple[str, ...]] = {
    "中东辙": ("eng", "ing", "ong", "iong", "ueng"),
    "江阳辙": ("ang", "iang", "uang"),
    "一七辙": ("i", "v", "er"),
    "灰堆辙": ("ei", "uei"),
    "油求辙": ("ou", "iou"),
    "梭波辙": ("o", "e", "uo", "io"),
    "人辰辙": ("en", "in", "uen", "vn"),
    "言前辙": ("an", "ian", "uan", "van"),
    "发花辙": ("a", "ia", "ua"),
    "乜斜辙": ("ie", "ve", "ê"),
    "怀来辙": ("ai", "uai"),
    "姑苏辙": ("u",),
    "遥条辙": ("ao", "iao"),
}
_GROUP_OF_FINAL = {final: k for k, finals in enumerate(RHYME_CLASSES.values()) for final in finals}

_RAW_NAME = re.compile(r"poet\.tang\.(\d+)\.json")
_NOTE = re.compile(r"[（(][^（）()]*[）)]")
_FOOTNOTE = re.compile(r"〖[^〖〗]*〗")
_UNWRAP = str.maketrans("", "", "[]［］「」『』“”‘’《》〈〉")
_MARKS = "，。？！；：、,.?!;:"
_MARK_RUN = re.compile(f"[{re.escape(_MARKS)}]+")
_HAN_OR_MARKS = re.compile(f"[{HAN_CLASS}{re.escape(_MARKS)}]*")


def strip_annotations(text: str) -> str:
    """Remove the editors' notes, footnote marks, brackets and quotes from a raw poem body."""
    while True:
        stripped = _NOTE.sub("", text)
        if stripped == text:
            break
        text = stripped
    return _FOOTNOTE.sub("", text).translate(_UNWRAP)


def regulate(text: str) -> str | None:
    """An annotation-free body -> the poem in canonical regulated form, or None.

    Returns the Han characters with ，/。 rewritten by line position (see the module docstring),
    or None if the text has a non-Han character besides the marks or is in none of the four
    forms. Characters are not converted here.
    """
    pieces = _MARK_RUN.split(text)
    if pieces[-1] != "":  # the last line must be ended by a mark
        return None
    lines = pieces[:-1]
    if len(lines) not in (4, 8) or len({len(line) for line in lines}) != 1:
        return None
    if len(lines[0]) not in (5, 7) or not all_han("".join(lines)):
        return None
    return "".join(line + (COMMA if k % 2 == 0 else PERIOD) for k, line in enumerate(lines))


def opencc_t2s() -> Callable[[str], str]:
    """OpenCC's traditional -> simplified converter; CharRNNError if OpenCC is not installed."""
    try:
        import opencc
    except ImportError:
        raise CharRNNError("converting the Tang poems to simplified characters needs OpenCC: "
                           f"{INSTALL_HINT}") from None
    return opencc.OpenCC("t2s").convert


def pypinyin_finals() -> Callable[[str], list[str]]:
    """char -> finals of all its readings (strict scheme, no tones), via pypinyin;
    CharRNNError if pypinyin is not installed."""
    try:
        import pypinyin
    except ImportError:
        raise CharRNNError(f"building the rhyme table needs pypinyin: {INSTALL_HINT}") from None

    def finals(ch: str) -> list[str]:
        readings = pypinyin.pinyin(ch, style=pypinyin.Style.FINALS, heteronym=True, strict=True,
                                   errors="ignore")
        return readings[0] if readings else []

    return finals


def raw_files(raw_dir: str | Path) -> list[Path]:
    """The poet.tang.N.json files of raw_dir, in order of N; CharRNNError if there are none."""
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise CharRNNError(f"{raw}: not a directory (expected the chinese-poetry poet.tang.N.json files)")
    found = [(int(m.group(1)), p) for p in raw.iterdir() if (m := _RAW_NAME.fullmatch(p.name))]
    if not found:
        raise CharRNNError(f"{raw}: no poet.tang.N.json files found")
    return [p for _, p in sorted(found)]


def read_raw(path: Path) -> list[str]:
    """The poem bodies of one raw file (paragraphs joined); CharRNNError if it is malformed."""
    try:
        poems = json.loads(path.read_text(encoding="utf-8"))
        return ["".join(poem["paragraphs"]) for poem in poems]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CharRNNError(f"{path}: not a chinese-poetry JSON file ({exc})") from None


def find_license(raw_dir: str | Path) -> Path:
    """The database's LICENSE, in raw_dir or its parent; CharRNNError if missing."""
    for folder in (Path(raw_dir), Path(raw_dir).parent):
        if (folder / "LICENSE").is_file():
            return folder / "LICENSE"
    raise CharRNNError(f"{raw_dir}: no LICENSE next to the raw files; the database's MIT license "
                       "must ship with the corpus")


def build_rhymes(chars: Iterable[str], finals_of: Callable[[str], list[str]]) -> dict:
    """The rhyme table of some characters: {"scheme", "groups", "chars": {char: [group, ...]}}.

    finals_of: char -> finals of all its readings, the most common first (pypinyin's order).
    Each character's list starts with the group of its first reading, which `--rhyme` uses,
    followed by its other groups in index order. Characters whose readings have no final get
    no entry; chars are sorted by code point so the table is reproducible. CharRNNError on a
    final missing from RHYME_CLASSES (a reading the mapping does not know).
    """
    table: dict[str, list[int]] = {}
    for ch in sorted(set(chars)):
        groups: list[int] = []
        for final in finals_of(ch):
            if final == "":
                continue
            if final not in _GROUP_OF_FINAL:
                raise CharRNNError(f"{ch!r}: final {final!r} has no rhyme class in "
                                   "charrnn.tang.RHYME_CLASSES; extend the mapping")
            if _GROUP_OF_FINAL[final] not in groups:
                groups.append(_GROUP_OF_FINAL[final])
        if groups:
            table[ch] = groups[:1] + sorted(groups[1:])
    return {"scheme": RHYME_SCHEME, "groups": list(RHYME_CLASSES), "chars": table}


def write_gzip_lines(lines: list[str], path: Path) -> None:
    """One line per entry, gzip-compressed with no timestamp and no file name in the header so
    that the same lines always give the same bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write("".join(line + "\n" for line in lines).encode("utf-8"))
    path.write_bytes(buf.getvalue())


def select_poems(raw_dir: str | Path, convert: Callable[[str], str]
                 ) -> tuple[list[str], dict, set[tuple[str, str]]]:
    """The regulated poems of raw_dir, simplified and deduplicated, in source order, with counts
    and the (traditional, simplified) character pairs of their conversion.

    convert: traditional -> simplified text (OpenCC t2s in production).
    Counts: read, unclean (dropped: non-Han characters after cleaning), not_regulated (dropped:
    in none of the four forms), duplicates (dropped: same simplified body as an earlier poem).
    """
    counts = dict.fromkeys(("read", "unclean", "not_regulated", "duplicates"), 0)
    seen: set[str] = set()
    poems = []
    pairs: set[tuple[str, str]] = set()
    for path in raw_files(raw_dir):
        for text in read_raw(path):
            counts["read"] += 1
            text = strip_annotations(text)
            if not _HAN_OR_MARKS.fullmatch(text):
                counts["unclean"] += 1
                continue
            original = regulate(text)
            # Conversion maps characters one to one, but check the form again to be sure.
            body = convert(original) if original is not None else None
            if body is None or form_of(body) is None or len(body) != len(original):
                counts["not_regulated"] += 1
                continue
            pairs.update(zip(original, body))
            if body in seen:
                counts["duplicates"] += 1
            else:
                seen.add(body)
                poems.append(body)
    return poems, counts, pairs


def split_poems(poems: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A fixed-seed random split: round(len * val_fraction) poems go to validation.

    Both parts come in the shuffled order: the source is grouped by poet, and training cuts the
    text into a few long contiguous rows, so a shuffled order gives every row the same mix.
    """
    order = np.random.default_rng(seed).permutation(len(poems))
    n_val = round(len(poems) * val_fraction)
    return [poems[i] for i in order[n_val:]], [poems[i] for i in order[:n_val]]


def prepare_tang(raw_dir: str | Path, out_dir: str | Path, val_fraction: float = 0.05,
                 seed: int = 1, *, tables_dir: str | Path | None = None,
                 convert: Callable[[str], str] | None = None,
                 finals_of: Callable[[str], list[str]] | None = None,
                 pingshui_source: Source | None = None) -> dict:
    """Build the training corpus (and optionally the rhyme tables) from the raw JSON files.

    raw_dir: folder of poet.tang.N.json, with LICENSE in it or next to it. out_dir: created if
    needed; receives train.txt.gz, val.txt.gz, README.md, LICENSE. tables_dir: where to write
    the rhyme tables pingshui.json and shisan.json (the package's are in charrnn/data), or None
    not to. convert / finals_of / pingshui_source: OpenCC t2s, pypinyin and the 平水韵 books of
    charrnn.pingshui by default (imported only here).
    Returns the counts (also in the README): read, unclean, not_regulated, duplicates, poems,
    train, val, one entry per form key, chars (distinct characters of the poems, marks included),
    han_chars, rhyme_chars (characters with a 十三辙 class), pingshui_chars (characters in the
    平水韵 table), pingshui_tokens and both_tones_tokens (shares of the corpus's Han tokens with
    an entry, and with both 平 and 仄 readings); the last four 0 if the tables are not built.
    """
    if not 0 <= val_fraction < 1:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    raw_files(raw_dir)  # a missing or empty raw directory is named as such, before the license
    license_file = find_license(raw_dir)
    convert = opencc_t2s() if convert is None else convert
    if tables_dir is not None:  # fail before the long part if a package is missing
        finals_of = pypinyin_finals() if finals_of is None else finals_of
        pingshui_source = read_sources() if pingshui_source is None else pingshui_source
    poems, counts, pairs = select_poems(raw_dir, convert)
    train, val = split_poems(poems, val_fraction, seed)
    chars = set("".join(poems))
    counts.update(poems=len(poems), train=len(train), val=len(val))
    counts.update({key: 0 for key in FORMS})
    for poem in poems:
        counts[form_of(poem)] += 1
    counts.update(chars=len(chars), han_chars=sum(map(is_han, chars)), rhyme_chars=0,
                  pingshui_chars=0, pingshui_tokens=0.0, both_tones_tokens=0.0)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_gzip_lines(train, out / "train.txt.gz")
    write_gzip_lines(val, out / "val.txt.gz")
    shutil.copyfile(license_file, out / "LICENSE")
    if tables_dir is not None:
        table = build_rhymes((ch for ch in chars if is_han(ch)), finals_of)
        write_table(table, Path(tables_dir) / "shisan.json")
        book = build_pingshui(pairs, pingshui_source, convert)
        write_table(book, Path(tables_dir) / "pingshui.json")
        counts.update(rhyme_chars=len(table["chars"]), pingshui_chars=len(book["chars"]),
                      **_coverage(poems, book))
    command = ("python -c \"from charrnn.tang import prepare_tang; prepare_tang("
               f"{str(raw_dir)!r}, {str(out_dir)!r}, val_fraction={val_fraction!r}, seed={seed!r}"
               + (f", tables_dir={str(tables_dir)!r}" if tables_dir is not None else "")
               + ")\"")
    (out / "README.md").write_text(_readme(counts, train, val, command), encoding="utf-8")
    return counts


def _coverage(poems: list[str], book: dict) -> dict:
    """Shares of the poems' Han tokens with a 平水韵 entry, and with both 平 and 仄 readings."""
    tokens = [ch for poem in poems for ch in poem if is_han(ch)]
    entries, both = 0, 0
    for ch in tokens:
        tones = {book["tones"][g] == "平" for g in book["chars"].get(ch, ())}
        entries += bool(tones)
        both += tones == {True, False}
    return {"pingshui_tokens": entries / max(len(tokens), 1), "both_tones_tokens": both / max(len(tokens), 1)}


def _sha256(lines: list[str]) -> str:
    return hashlib.sha256("".join(line + "\n" for line in lines).encode("utf-8")).hexdigest()


def _readme(counts: dict, train: list[str], val: list[str], command: str) -> str:
    """The corpus README: what it is, where it comes from, how it was made, the counts."""
    def per_form(poems):
        found = dict.fromkeys(FORMS, 0)
        for poem in poems:
            found[form_of(poem)] += 1
        return found

    in_train, in_val = per_form(train), per_form(val)
    rows = "\n".join(f"| {f.key} | {f.name} | {f.lines} × {f.chars} | {counts[f.key]:,} | "
                     f"{in_train[f.key]:,} | {in_val[f.key]:,} |" for f in FORMS.values())
    return f"""# Tang poems in the four regulated forms

Simplified-character bodies of the Tang poems written in 五言绝句, 七言绝句, 五言律诗 or 七言律诗,
one poem per line (UTF-8, gzip), e.g.

    白日依山尽，黄河入海流。欲穷千里目，更上一层楼。

- `train.txt.gz`: {counts['train']:,} poems; `val.txt.gz`: {counts['val']:,} poems (a fixed-seed
  random split; both files are in shuffled order).
- Source: {SOURCE}. The license is in `LICENSE` and must ship with any copy.
- Made by `charrnn.tang.prepare_tang` (requires `{INSTALL_HINT}`), from the repository root:

      {command}

  It rewrites these files byte for byte identically (and the rhyme tables in
  `charrnn/data` when `tables_dir` is given). How poems are cleaned and selected is
  described in the docstring of `charrnn/tang.py`: annotations removed, poems with lost or
  unencodable characters dropped, only the four regulated forms kept, line-end marks rewritten
  to alternate ，and 。, traditional characters converted to simplified with OpenCC `t2s`, repeated
  bodies dropped (the first kept).

## Counts

| key | form | lines × chars | poems | train | val |
|---|---|---|---:|---:|---:|
{rows}
| | total | | {counts['poems']:,} | {counts['train']:,} | {counts['val']:,} |

- Poems read: {counts['read']:,}; dropped: {counts['unclean']:,} with characters other than Han
  characters and punctuation after cleaning (□, {{…}}, ○, digits, private-use code points, ...),
  {counts['not_regulated']:,} in none of the four forms, {counts['duplicates']:,} duplicate bodies.
- Vocabulary: {counts['chars']:,} distinct characters ({counts['han_chars']:,} Han characters plus
  ，and 。); with the newline that ends each poem, {counts['chars'] + 1:,} symbols.
- Rhyme tables (charrnn/data): `pingshui.json`, {counts['pingshui_chars']:,} characters in the
  106 groups of the 平水韵, each group with its tone (平 上 去 入), from {SOURCES[0]} and
  {SOURCES[1]}, merged (the union of their readings); a simplified character has the groups of every traditional character
  that became it in conversion (see `charrnn/pingshui.py`). Coverage: {counts['pingshui_tokens']:.2%}
  of the corpus's Han tokens have an entry; {counts['both_tones_tokens']:.1%} have both 平 and 仄
  readings (看 长 行 ...), which fit either tone. `shisan.json`, {counts['rhyme_chars']:,}
  characters with a 十三辙 class (modern finals, pypinyin), the alternative scheme.
- SHA-256 of the uncompressed text: train `{_sha256(train)}`, val `{_sha256(val)}`.
"""
