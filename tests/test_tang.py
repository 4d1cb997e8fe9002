"""Preparing the Tang corpus: cleaning, form selection, conversion, dedup, split, rhyme table."""

import gzip
import hashlib
import json
import sys
from pathlib import Path

import pytest

from charrnn import tang
from charrnn.errors import CharRNNError, UsageError
from charrnn.poetry import form_of

# A tiny traditional -> simplified table standing in for OpenCC (not installed for the tests).
T2S = str.maketrans("盡黃窮層樓舉頭鄉辭雲間還兩聲輕過萬", "尽黄穷层楼举头乡辞云间还两声轻过万")


def convert(text):
    return text.translate(T2S)


DENGGUAN = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"
JINGYESI = "床前看月光，疑是地上霜。举头望山月，低头思故乡。"
ZAOFA = "朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。"
CHUNWANG = "国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。"
DENGGAO = ("风急天高猿啸哀，渚清沙白鸟飞回。无边落木萧萧下，不尽长江滚滚来。"
           "万里悲秋常作客，百年多病独登台。艰难苦恨繁霜鬓，潦倒新停浊酒杯。")

RAW_A = [
    # Traditional, with a variant note, a footnote mark and an editor-restored character.
    ["白日依山盡（一作「白日」），黃河入海流。", "〖1〗欲窮千里目，更上一層[樓]。"],
    # A lost character: dropped.
    ["床前□月光，疑是地上霜。", "举头望明月，低头思故乡。"],
    # Line-end marks that are not ，/。, a nested note and a doubled mark left by a note.
    ["床前看月光？疑是地上霜！", "舉頭望山月（按：（一）作「明月」），低頭思故鄉。（見《某書》。）。"],
    # An unencodable character description: dropped.
    ["江上{氵+共}風起，山中雨色深。", "孤舟何處去，獨客不勝心。"],
    # Not a regulated form: six lines, and one with lines of mixed length.
    ["春來花自開，秋去葉還落。", "山高水更長，路遠人難覓。", "何時歸故園，共醉林間酌。"],
    ["春花秋月何時了，往事知多少。", "小樓昨夜又東風，故國不堪回首月明中。"],
]
RAW_B = [
    # The first poem again, already simplified: a duplicate once converted.
    [DENGGUAN],
    ["朝辭白帝彩雲間，千里江陵一日還。", "兩岸猿聲啼不住，輕舟已過萬重山。"],
    [CHUNWANG[:12], CHUNWANG[12:24], CHUNWANG[24:36], CHUNWANG[36:]],
    [DENGGAO],
    # Digits left in the verse: dropped.
    ["一去二三里，煙村4五家。亭臺六七座，八九十枝花。"],
    # Fullwidth comma variants and an unterminated last line: not kept.
    ["風急天高猿嘯哀，渚清沙白鳥飛回"],
]

# Finals of the line-end characters, standing in for pypinyin (not installed for the tests).
FINALS = {"流": ["iou"], "楼": ["ou"], "霜": ["uang"], "乡": ["iang"], "间": ["ian", "ian"],
          "还": ["uan", "ai"], "山": ["an"], "深": ["en"], "心": ["in"], "金": ["in"],
          "簪": ["an"], "哀": ["ai"], "回": ["uei"], "来": ["ai"], "台": ["ai", "i"],
          "杯": ["ei"], "鱼": ["v"], "知": ["i"], "嗯": [""]}


def finals_of(ch):
    return FINALS.get(ch, [])


# A tiny 平水韵 standing in for the two rhyme-book packages (not installed for the tests): three
# groups, keyed by traditional characters as the sources are.
PINGSHUI_SOURCE = ([("下平十一尤", "平"), ("下平七陽", "平"), ("入十一陌", "入")],
                   {"流": {0}, "樓": {0}, "鄉": {1}, "霜": {1}, "白": {2}, "長": {1}, "盡": {2}})


def write_raw(folder, files):
    folder.mkdir()
    for name, poems in files.items():
        entries = [{"author": "某", "title": "某", "paragraphs": p, "id": str(k)}
                   for k, p in enumerate(poems)]
        (folder / name).write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    (folder.parent / "LICENSE").write_text("The MIT License (MIT)\n", encoding="utf-8")


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "raw"
    write_raw(folder, {"poet.tang.0.json": RAW_A, "poet.tang.1000.json": RAW_B})
    return folder


def prepare(raw, out, **kw):
    return tang.prepare_tang(raw, out, convert=convert, finals_of=finals_of,
                             pingshui_source=PINGSHUI_SOURCE, **kw)


def read_lines(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("raw_text, expected", [
    ("白日依山尽（一作「白日」），黄河入海流。〖1〗欲穷千里目，更上一层[楼]。", DENGGUAN),
    ("白日依山尽，黄河入海流；欲穷千里目：更上一层楼！", DENGGUAN),
    ("白日依山尽，（注（一）云）黄河入海流。欲穷千里目，更上一层楼。（见《某书》。）。", DENGGUAN),
    ("白日依山尽，黄河入海流。欲穷千里目，更上一层［楼］。", DENGGUAN),
    ("白日依山尽，黄河入海流。欲穷千里目，更上一层□。", None),
    ("白日依山尽，黄河入海流。欲穷千里目，更上一层楼", None),
    ("白日依山尽，黄河入海流。欲穷千里目，更上一层楼（未完。", None),
    ("白日依山尽，黄河入海流。", None),
    ("白日依山尽，黄河入海流。欲穷千里目，更上层楼。", None),
    ("白日依山尽，黄河入海流。欲穷千里目，更上一层楼。白日依山尽，黄河入海流。", None),
])
def test_annotations_stripped_then_regulated(raw_text, expected):
    assert tang.regulate(tang.strip_annotations(raw_text)) == expected


def test_prepare_selects_cleans_converts_and_dedupes(raw, tmp_path):
    out = tmp_path / "out"
    counts = prepare(raw, out, val_fraction=0.0)
    poems = read_lines(out / "train.txt.gz")
    assert read_lines(out / "val.txt.gz") == []
    assert sorted(poems) == sorted([DENGGUAN, JINGYESI, ZAOFA, CHUNWANG, DENGGAO])
    assert counts["read"] == 12
    assert (counts["unclean"], counts["not_regulated"], counts["duplicates"]) == (3, 3, 1)
    assert (counts["poems"], counts["train"], counts["val"]) == (5, 5, 0)
    assert [counts[k] for k in ("wujue", "qijue", "wulv", "qilv")] == [2, 1, 1, 1]
    assert counts["chars"] == len(set("".join(poems)))
    assert counts["han_chars"] == counts["chars"] - 2
    assert (out / "LICENSE").read_text(encoding="utf-8") == "The MIT License (MIT)\n"
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "prepare_tang(" in readme and "MIT" in readme and "| wujue | 五言绝句 | 4 × 5 | 2 |" in readme


def test_prepare_is_byte_identical_and_splits(raw, tmp_path):
    first = tmp_path / "out"
    tables = tmp_path / "data"
    prepare(raw, first, val_fraction=0.4, seed=3, tables_dir=tables)
    before = digest(first) | digest(tables)
    prepare(raw, first, val_fraction=0.4, seed=3, tables_dir=tables)
    assert digest(first) | digest(tables) == before
    train, val = read_lines(first / "train.txt.gz"), read_lines(first / "val.txt.gz")
    assert (len(train), len(val)) == (3, 2)
    assert sorted(train + val) == sorted([DENGGUAN, JINGYESI, ZAOFA, CHUNWANG, DENGGAO])
    # No timestamp and no file name in the gzip header.
    header = (first / "train.txt.gz").read_bytes()[:10]
    assert header[3] == 0 and header[4:8] == b"\0\0\0\0"


def test_prepare_writes_the_rhyme_table(raw, tmp_path):
    out = tmp_path / "out"
    counts = prepare(raw, out, tables_dir=tmp_path / "data")
    table = json.loads((tmp_path / "data" / "shisan.json").read_text(encoding="utf-8"))
    groups = table["groups"]
    assert len(groups) == 13 and table["scheme"].startswith("十三辙")
    chars = table["chars"]
    assert counts["rhyme_chars"] == len(chars)
    assert list(chars) == sorted(chars)
    assert [groups[g] for g in chars["流"]] == [groups[g] for g in chars["楼"]] == ["油求辙"]
    assert [groups[g] for g in chars["还"]] == ["言前辙", "怀来辙"]
    assert [groups[g] for g in chars["台"]] == ["怀来辙", "一七辙"]  # the first reading's class first
    assert "白" not in chars  # no reading known -> no entry


def test_prepare_writes_the_pingshui_table_keyed_by_simplified_characters(raw, tmp_path):
    counts = prepare(raw, tmp_path / "out", tables_dir=tmp_path / "data")
    table = json.loads((tmp_path / "data" / "pingshui.json").read_text(encoding="utf-8"))
    assert table["scheme"] == "平水韵" and len(table["groups"]) == len(table["tones"]) == 3
    chars = table["chars"]
    assert list(chars) == sorted(chars) and counts["pingshui_chars"] == len(chars)
    # looked up through the traditional characters they were converted from: 樓 -> 楼, 鄉 -> 乡
    assert chars["楼"] == chars["流"] == [0] and chars["乡"] == chars["霜"] == [1]
    # 长 came into the poems as 长 (DENGGAO is simplified already), and the source knows only 長
    assert chars["尽"] == chars["白"] == [2] and "长" not in chars
    tokens = [ch for p in read_lines(tmp_path / "out" / "train.txt.gz") for ch in p if ch not in "，。"]
    assert counts["pingshui_tokens"] == pytest.approx(sum(ch in chars for ch in tokens) / len(tokens))
    readme = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert "pingshui.json" in readme and f"{counts['pingshui_tokens']:.2%}" in readme


def test_rhyme_classes_follow_the_thirteen_tracks():
    table = tang.build_rhymes(["知", "鱼", "嗯", "霜", "乡", "间", "回", "杯"], finals_of)
    names = table["groups"]
    by_char = {ch: [names[g] for g in gs] for ch, gs in table["chars"].items()}
    assert by_char["知"] == by_char["鱼"] == ["一七辙"]   # -i after zh and ü both in 一七辙
    assert by_char["霜"] == by_char["乡"] == ["江阳辙"]
    assert by_char["回"] == by_char["杯"] == ["灰堆辙"]
    assert "嗯" not in by_char                           # a syllabic nasal has no final
    all_finals = [f for finals in tang.RHYME_CLASSES.values() for f in finals]
    assert len(all_finals) == len(set(all_finals))        # every final in exactly one class


def test_unknown_final_is_an_error():
    with pytest.raises(CharRNNError, match="'xyz'"):
        tang.build_rhymes(["某"], lambda ch: ["xyz"])


def test_missing_opencc_and_pypinyin_say_how_to_install(raw, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "opencc", None)     # makes `import opencc` fail
    monkeypatch.setitem(sys.modules, "pypinyin", None)
    with pytest.raises(CharRNNError, match=r"pip install 'charrnn\[tang\]'"):
        tang.opencc_t2s()
    with pytest.raises(CharRNNError, match=r"pip install 'charrnn\[tang\]'"):
        tang.pypinyin_finals()
    with pytest.raises(CharRNNError, match="OpenCC"):
        tang.prepare_tang(raw, tmp_path / "out")
    with pytest.raises(CharRNNError, match="pypinyin"):
        tang.prepare_tang(raw, tmp_path / "out", convert=convert, tables_dir=tmp_path / "data")


def test_raw_files_are_read_in_numeric_order(tmp_path):
    folder = tmp_path / "raw"
    write_raw(folder, {f"poet.tang.{n}.json": [] for n in (10000, 0, 2000, 1000)})
    (folder / "poet.song.0.json").write_text("[]", encoding="utf-8")
    assert [p.name for p in tang.raw_files(folder)] == [
        "poet.tang.0.json", "poet.tang.1000.json", "poet.tang.2000.json", "poet.tang.10000.json"]


def test_bad_inputs_name_the_culprit(tmp_path, raw):
    with pytest.raises(CharRNNError, match="no poet.tang.N.json"):
        tang.raw_files(tmp_path)
    with pytest.raises(CharRNNError, match="not a directory"):
        tang.raw_files(tmp_path / "missing")
    (raw / "poet.tang.2000.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CharRNNError, match="poet.tang.2000.json"):
        prepare(raw, tmp_path / "out")
    with pytest.raises(UsageError, match="val_fraction"):
        prepare(raw, tmp_path / "out", val_fraction=1.0)
    (tmp_path / "LICENSE").unlink()
    with pytest.raises(CharRNNError, match="LICENSE"):
        prepare(raw, tmp_path / "out")
    with pytest.raises(CharRNNError, match="not a directory"):  # not "no LICENSE"
        prepare(tmp_path / "missing", tmp_path / "out")


def test_shipped_corpus_matches_its_readme():
    folder = Path(__file__).resolve().parent.parent / "corpora" / "tang"
    train, val = read_lines(folder / "train.txt.gz"), read_lines(folder / "val.txt.gz")
    poems = train + val
    assert len(set(poems)) == len(poems)
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert f"| | total | | {len(poems):,} | {len(train):,} | {len(val):,} |" in readme
    forms = {form_of(p) for p in poems}
    assert forms == {"wujue", "qijue", "wulv", "qilv"}
    assert (folder / "LICENSE").read_text(encoding="utf-8").strip().startswith("The MIT License")
