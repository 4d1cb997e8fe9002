"""The regulated forms: recognition, the 十三辙 table, metrics and constrained decoding.
(Tones, templates and the 平水韵: test_prosody.py.)"""

import numpy as np
import pytest

from charrnn.corpus import Vocab
from charrnn.errors import CharRNNError, UsageError
from charrnn.poetry import FORMS, compose, corpus_lines, form_of, get_form, han_mask, is_han, poem_lines
from charrnn.prosody import RhymeBook, common_rhyme, load_book
from charrnn.scansion import poem_metrics

JINGYESI = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
JINGYESI_OLD = "床前看月光，疑是地上霜。举头望山月，低头思故乡。"
DENGGUAN = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"
DENGGUAN_OFF = "白日依山尽，黄河入海流。欲穷千里目，更上一层天。"  # 天 does not rhyme with 流
ZAOFA = "朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。"
CHUNWANG = "国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。"
DENGGAO = ("风急天高猿啸哀，渚清沙白鸟飞回。无边落木萧萧下，不尽长江滚滚来。"
           "万里悲秋常作客，百年多病独登台。艰难苦恨繁霜鬓，潦倒新停浊酒杯。")

# Common characters of the verse; together with the marks they make the test vocabulary.
HAN = ("白日依山尽黄河入海流欲穷千里目更上一层楼床前明月光疑是地上霜举头望低思故乡朝辞帝彩云间江陵"
       "还两岸猿声啼不住轻舟已过万重国破在城春草木深感时花溅泪恨别鸟惊心烽火连三家书抵金搔短浑胜簪"
       "风急天高啸哀渚清沙飞回无边落萧下长滚来悲秋常作客百年多病独登台艰难苦繁鬓潦倒新停浊酒杯人生"
       "何处归路远行寒夜雨孤舟老君闻知时去无愁见空青林")


def make_vocab(extra=""):
    return Vocab.build("\n，。" + HAN + extra)


class RandomModel:
    """Fixed random bigram logits; `bias` adds to chosen ids (to tempt the decoder)."""

    def __init__(self, vocab_size, seed=0, bias=None):
        self.vocab_size = vocab_size
        self.W = np.random.default_rng(seed).normal(0.0, 2.0, (vocab_size, vocab_size))
        if bias is not None:
            self.W[:, bias] += 30.0
        self.fed = []

    def init_state(self, batch_size):
        return [(np.zeros((batch_size, 1)),)]

    def step(self, ids, state):
        self.fed.append(np.array(ids))
        return self.W[ids].astype(np.float32), [(state[0][0] + 1,)]


class ParrotModel(RandomModel):
    """Recites `poem` when decoded greedily: step t strongly predicts the poem's character t."""

    def __init__(self, vocab, poem):
        super().__init__(len(vocab), seed=1)
        self.targets = [vocab.index[ch] for ch in poem]

    def step(self, ids, state):
        logits, new_state = super().step(ids, state)
        t = int(state[0][0][0, 0])
        logits[:, self.targets[t]] += 50.0
        return logits, new_state


def tempting(vocab):
    """Ids a careless decoder might emit: everything that is not a Han character."""
    return [i for i, ch in enumerate(vocab.chars) if not is_han(ch)]


# -- forms ----------------------------------------------------------------------------------


def test_forms_by_key_and_chinese_name():
    for form in FORMS.values():
        assert get_form(form.key) is get_form(form.name) is form
    assert (FORMS["wujue"].chars, FORMS["wujue"].lines) == (5, 4)
    assert (FORMS["qilv"].chars, FORMS["qilv"].lines) == (7, 8)
    with pytest.raises(UsageError, match="--form"):
        get_form("sonnet")


@pytest.mark.parametrize("poem, key", [
    (JINGYESI, "wujue"), (DENGGUAN + "\n", "wujue"), (ZAOFA, "qijue"), (CHUNWANG, "wulv"),
    (DENGGAO, "qilv"),
    ("", None),
    ("床前明月光。疑是地上霜，举头望明月。低头思故乡，", None),   # marks in the wrong order
    ("床前明月光，疑是地上霜。举头望明月，低头思故乡", None),     # no final mark
    ("床前明月光，疑是地上霜。", None),                           # two lines
    ("床前明月光，疑是地上霜。举头望明月，低头思故乡。床前明月光，疑是地上霜。", None),
    ("床前明月光，疑是地上霜。举头望明月，低头思故乡乡。", None),  # uneven lines
    ("床前明月光光，疑是地上霜霜。举头望明月月，低头思故乡乡。", None),  # six characters
    ("床前明月a，疑是地上霜。举头望明月，低头思故乡。", None),
    ("床前明月光，疑是地上霜。举头望明月，低头思故乡。床前", None),
    ("床前明月光，疑是地上霜。\n举头望明月，低头思故乡。", None),
])
def test_form_of(poem, key):
    assert form_of(poem) == key


def test_han_check_covers_the_extensions():
    for ch in "一龥\u9fff㐀\U00020000\U0002a700\U0002ebf0\U00030000\U000323af\U000323b0\ufa0e\ufa29":
        assert is_han(ch), hex(ord(ch))
    for ch in ["〇", "，", "。", "a", "□", "\ue829", "\uf900", "\u2f00", "⺊", "<unk>", "", "一二"]:
        assert not is_han(ch), ch
    tokens = ["一", "，", "<unk>", "\U00020000", "a", "\ufa0e", "\uf900", "\U0002ee5f", "\U00033480"]
    assert han_mask(tokens).tolist() == [is_han(t) for t in tokens]


# -- rhyme table and metrics ----------------------------------------------------------------


def test_shipped_shisan_table():
    book = load_book("shisan")
    names = book.groups
    assert len(names) == 13 and not any(book.tones)
    group = {ch: {names[g] for g in book.rhyme_groups(ch)} for ch in "花流楼霜乡鱼知衣子山间天"}
    assert group["花"] == {"发花辙"}
    assert group["流"] == group["楼"] == {"油求辙"}
    assert group["霜"] == group["乡"] == {"江阳辙"}
    assert group["鱼"] == group["知"] == group["衣"] == group["子"] == {"一七辙"}
    assert group["山"] == group["间"] == group["天"] == {"言前辙"}
    assert common_rhyme(list("流楼"), book) and not common_rhyme(list("流天"), book)
    # 家 reads jiā, and rarely gū: any reading counts for the metric, the main one for --rhyme.
    main = book.main_readings()
    assert {names[g] for g in book.chars["家"]} == {"发花辙", "乜斜辙", "姑苏辙"}
    assert common_rhyme(list("家初"), book) and not common_rhyme(list("家初"), main)
    assert main.chars["家"] == (names.index("发花辙"),) and main.chars.keys() == book.chars.keys()
    assert not common_rhyme(["流", "A"], book)  # a character missing from the table rhymes with nothing
    assert len(book.chars) > 6000


def test_metrics_by_hand():
    poems = [JINGYESI, JINGYESI_OLD, DENGGUAN, DENGGUAN_OFF, "不是诗"]
    corpus = corpus_lines([JINGYESI, DENGGUAN])
    assert corpus == set(poem_lines(JINGYESI)) | set(poem_lines(DENGGUAN))
    m = poem_metrics(poems, corpus)
    assert m["poems"] == 5 and m["valid"] == pytest.approx(4 / 5)
    assert m["forms"] == {"wujue": pytest.approx(4 / 5), "qijue": 0.0, "wulv": 0.0, "qilv": 0.0}
    assert m["overall"]["rhyme"] == pytest.approx(3 / 4)  # 霜/乡 twice, 流/楼 yes, 流/天 no
    assert m["lines"] == 16
    assert m["copied"] == pytest.approx(13 / 16)   # 4 + 2 + 4 + 3 lines of the corpus
    assert m["distinct"] == pytest.approx(11 / 16)  # 4 + 2 new + 4 + 1 new
    assert poem_metrics(poems)["copied"] is None


def small_book(chars):
    """A 平水韵-like book of four 平 groups: chars maps characters to group indices."""
    return RhymeBook("pingshui", ("g0", "g1", "g2", "g3"), ("平",) * 4,
                     {ch: tuple(gs) for ch, gs in chars.items()})


def test_metrics_with_a_given_table_and_no_valid_poems():
    book = small_book({"霜": (0, 1), "乡": (1,), "流": (2,), "楼": (3,)})
    m = poem_metrics([JINGYESI, DENGGUAN], pingshui=book)
    assert m["overall"]["rhyme"] == pytest.approx(1 / 2)
    assert m["by_form"]["wujue"]["poems"] == 2
    empty = poem_metrics(["不是诗"], set())
    assert (empty["valid"], empty["overall"]["rhyme"], empty["copied"], empty["distinct"]) == (0.0, 0.0, 0.0, 0.0)


# -- constrained decoding -------------------------------------------------------------------


@pytest.mark.parametrize("form", list(FORMS))
def test_any_model_gives_valid_poems(form):
    vocab = make_vocab("ab?<>")
    model = RandomModel(len(vocab), bias=tempting(vocab))
    poems = compose(model, vocab, form, np.random.default_rng(0), num=200, temperature=1.0)
    assert len(poems) == 200
    assert all(form_of(p) == form for p in poems)
    assert all(ch in vocab.index for p in poems for ch in p)


def test_capped_vocab_never_emits_unk():
    vocab = Vocab.build("\n，。" * 10 + HAN * 2 + "龘", max_size=60)
    assert vocab.unk_id is not None
    model = RandomModel(len(vocab), bias=[vocab.unk_id])
    poems = compose(model, vocab, "五言律诗", np.random.default_rng(1), num=50, top_k=3)
    assert all(form_of(p) == "wulv" for p in poems)


def test_decoding_starts_after_a_newline():
    vocab = make_vocab()
    model = RandomModel(len(vocab))
    compose(model, vocab, "wujue", np.random.default_rng(0), num=3)
    assert model.fed[0].tolist() == [vocab.index["\n"]] * 3
    assert len(model.fed) == 4 * 6


@pytest.mark.parametrize("form, heads", [("wujue", "春夏秋冬"), ("qilv", "白日依山黄河入海")])
def test_acrostic_heads_are_exact(form, heads):
    vocab = make_vocab("夏冬")
    poems = compose(RandomModel(len(vocab)), vocab, form, np.random.default_rng(2), num=50,
                    acrostic=heads, rhyme=True)
    for poem in poems:
        assert form_of(poem) == form
        assert "".join(line[0] for line in poem_lines(poem)) == heads


@pytest.mark.parametrize("heads, message", [
    ("春夏秋", "exactly 4"), ("春夏秋冬天", "exactly 4"), ("春夏秋龘", "龘"), ("春夏秋a", "'a'"),
])
def test_bad_acrostic(heads, message):
    vocab = make_vocab("夏冬a")
    with pytest.raises(UsageError, match=f"--acrostic.*{message}"):
        compose(RandomModel(len(vocab)), vocab, "wujue", np.random.default_rng(0), acrostic=heads)


def test_start_is_respected():
    vocab = make_vocab()
    poems = compose(RandomModel(len(vocab)), vocab, "qijue", np.random.default_rng(3), num=20,
                    start="朝辞白帝")
    assert all(p.startswith("朝辞白帝") and form_of(p) == "qijue" for p in poems)
    whole = compose(RandomModel(len(vocab)), vocab, "wujue", np.random.default_rng(3),
                    start="床前明月光", acrostic="床疑举低")
    assert whole[0].startswith("床前明月光，疑") and form_of(whole[0]) == "wujue"


@pytest.mark.parametrize("start, message", [
    ("床前明月光光", "at most 5"), ("床前龘", "龘"), ("床前a", "'a'"), ("春", "--acrostic"),
])
def test_bad_start(start, message):
    vocab = make_vocab("a")
    with pytest.raises(UsageError, match=f"--start.*{message}"):
        compose(RandomModel(len(vocab)), vocab, "wujue", np.random.default_rng(0), start=start,
                acrostic="床疑举低" if start == "春" else None)


@pytest.mark.parametrize("scheme", ["pingshui", "shisan"])
@pytest.mark.parametrize("form", list(FORMS))
def test_rhyme_makes_every_poem_rhyme(form, scheme):
    vocab = make_vocab()
    poems = compose(RandomModel(len(vocab), seed=5), vocab, form, np.random.default_rng(4),
                    num=200, temperature=1.5, rhyme=True, rhyme_scheme=scheme)
    book = load_book(scheme) if scheme == "pingshui" else load_book(scheme).main_readings()
    for poem in poems:
        ends = [line[-1] for line in poem_lines(poem)[1::2]]
        shared = common_rhyme(ends, book)
        assert shared  # in the main readings for the 十三辙
        choices = sum(bool(book.rhyme_groups(ch) & shared) for ch in vocab.chars)
        # No rhyme character twice, unless the vocabulary has too few in the group.
        assert len(set(ends)) == min(len(ends), choices)
    plain = compose(RandomModel(len(vocab), seed=5), vocab, form, np.random.default_rng(4),
                    num=200, temperature=1.5)
    assert poem_metrics(plain)["overall"]["rhyme"] < 0.9  # the constraint is what makes them rhyme


def test_rhyme_falls_back_to_repeating_when_the_group_is_too_small():
    vocab = make_vocab()
    book = small_book({"花": (0,), "家": (0,)})  # only two characters rhyme at all
    poems = compose(RandomModel(len(vocab)), vocab, "wulv", np.random.default_rng(0), num=30,
                    rhyme=True, book=book)
    assert poem_metrics(poems, pingshui=book)["overall"]["rhyme"] == 1.0
    for poem in poems:
        ends = [line[-1] for line in poem_lines(poem)[1::2]]
        assert len(set(ends[:2])) == 2 and set(ends) == {"花", "家"}  # both before a repeat


def test_forbidden_lines_are_not_copied():
    vocab = make_vocab()
    for poem in (DENGGUAN, DENGGAO):
        form = form_of(poem)
        greedy = compose(ParrotModel(vocab, poem), vocab, form, np.random.default_rng(0),
                         temperature=0)
        assert greedy == [poem]  # the parrot recites when nothing stops it
        banned = corpus_lines([poem, JINGYESI])
        poems = compose(ParrotModel(vocab, poem), vocab, form, np.random.default_rng(0),
                        num=5, temperature=0, forbid_corpus_lines=banned)
        for new, old in zip(poem_lines(poems[0]), poem_lines(poem)):
            assert new != old and new[:-1] == old[:-1]  # only the completing character changed
        assert poem_metrics(poems, banned)["copied"] == 0.0


def test_forbidden_whole_start_line():
    vocab = make_vocab()
    with pytest.raises(UsageError, match="--start"):
        compose(RandomModel(len(vocab)), vocab, "wujue", np.random.default_rng(0),
                start="白日依山尽", forbid_corpus_lines={"白日依山尽"})


class StutterModel(RandomModel):
    """Strongly predicts the character it was just fed: left alone it writes 叠字 lines."""

    def step(self, ids, state):
        logits, new_state = super().step(ids, state)
        logits[np.arange(len(ids)), ids] += 30.0
        return logits, new_state


def test_repeat_penalty_spares_the_character_just_written():
    # A penalty of 100 outweighs the model's +30 for any character already in the poem, except
    # the one just written (叠字 such as 萧萧 are part of the art): each line repeats its first
    # character, and no line reuses a character of an earlier one.
    vocab = make_vocab()
    poems = compose(StutterModel(len(vocab)), vocab, "wujue", np.random.default_rng(0), num=20,
                    temperature=0.0, repeat_penalty=100.0)
    for poem in poems:
        lines = [line for line in poem.replace("。", "，").split("，") if line]
        assert all(len(set(line)) == 1 for line in lines), poem
        assert len({line[0] for line in lines}) == len(lines), poem


def test_seed_reproduces():
    vocab = make_vocab()
    def run(seed):
        return compose(RandomModel(len(vocab)), vocab, "qilv", np.random.default_rng(seed), num=5,
                       top_p=0.9, rhyme=True, forbid_corpus_lines=corpus_lines([DENGGAO]))
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_bad_options_and_vocabularies():
    vocab = make_vocab()
    model, rng = RandomModel(len(vocab)), np.random.default_rng(0)
    with pytest.raises(UsageError, match="--num"):
        compose(model, vocab, "wujue", rng, num=0)
    with pytest.raises(UsageError, match="--form"):
        compose(model, vocab, "七言排律", rng)
    with pytest.raises(UsageError, match="--temperature"):
        compose(model, vocab, "wujue", rng, temperature=-1)
    no_marks = Vocab.build(HAN)
    with pytest.raises(CharRNNError, match="'，'"):
        compose(RandomModel(len(no_marks)), no_marks, "wujue", rng)
    no_han = Vocab.build("\n，。abc")
    with pytest.raises(CharRNNError, match="no Han"):
        compose(RandomModel(len(no_han)), no_han, "wujue", rng)
