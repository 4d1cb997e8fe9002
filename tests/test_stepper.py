"""The lean one-stream path (charrnn.stepper) against the general one (model.step + choose).

Every comparison is exact (the same logits bit for bit, the same ids, the same text, the same
generator state afterwards) except for stacked layers (stepper.stack_pays: layers above the
first of the size where one product over [x; h] is split over the cores), whose logits agree
to float rounding; the small models of the exact tests have none."""

import copy
import itertools
import warnings

import numpy as np
import pytest

from charrnn import stepper
from charrnn.corpus import Vocab
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN, ModelSpec
from charrnn.poetry import compose_scored, corpus_lines
from charrnn.sample import choose, generate

TEXT = "the quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs!\n"

# (cell, peephole, nonlinearity): every kind of layer the lean path has its own code for.
CELLS = [("lstm", False, "tanh"), ("lstm", True, "tanh"), ("gru", False, "tanh"),
         ("rnn", False, "tanh"), ("rnn", False, "relu")]
MODELS = list(itertools.product(CELLS, (0, 6), ("full", "adaptive"), ("float32", "float64")))
MODEL_IDS = [f"{c}{'-peep' if p else ''}{'-relu' if n == 'relu' else ''}-{'emb' if e else 'onehot'}-{h}-{d}"
             for (c, p, n), e, h, d in MODELS]


def make_model(cells, embedding, head, dtype, vocab_size, scale=3.0, hidden=16, layers=2, seed=0):
    """A random CharRNN, weights scaled up so that gates saturate and the logits are peaked
    (scale 40: exp overflows in the gates, the case np.errstate is there for)."""
    cell, peephole, nonlinearity = cells
    extra = {}
    if head == "adaptive":
        order = np.random.default_rng(seed + 1).permutation(vocab_size).tolist()
        extra = dict(head="adaptive", head_cutoffs=[vocab_size // 4, vocab_size // 2], head_order=order)
    model = CharRNN(ModelSpec(vocab_size, hidden, layers, cell=cell, embedding_size=embedding,
                              peephole=peephole, nonlinearity=nonlinearity, dtype=dtype, **extra))
    model.init_params(np.random.default_rng(seed))
    biases = np.random.default_rng(seed + 2)
    for key, value in model.params.items():
        if key.rsplit(".", 1)[-1].startswith("b"):  # zero at init: make every bias term count
            value[...] = biases.uniform(-0.5, 0.5, value.shape)
        value *= scale
    return model


def lean_only(model):
    """The model, with step disabled: what generate or compose does with it must be the lean path."""
    lean = copy.copy(model)  # the same parameters

    def no_step(ids, state):
        raise AssertionError("the general step was called at batch size 1")

    lean.step = no_step
    return lean


class General:
    """The model without one_stream: generate and compose then take the general path."""

    def __init__(self, model):
        self.model, self.vocab_size, self.dtype = model, model.vocab_size, model.dtype

    def init_state(self, batch_size):
        return self.model.init_state(batch_size)

    def step(self, ids, state):
        return self.model.step(ids, state)


class FixedUniform:
    """Stands in for np.random.Generator: every uniform it hands out is `u`."""

    def __init__(self, u):
        self.u = u

    def random(self, size=None):
        return np.full(size, self.u) if size is not None else self.u


@pytest.fixture(scope="module")
def vocab():
    return Vocab.build(TEXT)


def paired_logits(model, ids, reset_at):
    """(lean, general) logits (1, V) for each id fed to both paths, after checking their shape
    and dtype; both go back to the zero state before ids[reset_at]."""
    stream, state = model.one_stream(), model.init_state(1)
    for k, token in enumerate(ids):
        if k == reset_at:
            stream.reset()
            state = model.init_state(1)
        lean = stream.step(int(token))
        general, state = model.step(np.array([token]), state)
        assert lean.shape == general.shape == (1, model.vocab_size) and lean.dtype == general.dtype
        yield lean, general


@pytest.mark.parametrize("scale", [3.0, 40.0])
@pytest.mark.parametrize("cells, embedding, head, dtype", MODELS, ids=MODEL_IDS)
def test_one_stream_gives_the_logits_of_step_bit_for_bit(cells, embedding, head, dtype, scale):
    V = 30
    model = make_model(cells, embedding, head, dtype, V, scale=scale)
    ids = np.random.default_rng(3).integers(0, V, 150)
    # "all": at scale 40 the ReLU RNN blows up to inf and NaN, on both paths alike.
    with np.errstate(all="ignore"):
        for lean, general in paired_logits(model, ids, reset_at=75):
            np.testing.assert_array_equal(lean, general)


def test_one_stream_of_a_wider_deeper_model_still_matches():
    # Larger layers take other BLAS code paths than the small test models.
    model = make_model(CELLS[0], 0, "full", "float32", 65, scale=1.0, hidden=200, layers=3)
    stream, state = model.one_stream(), model.init_state(1)
    with np.errstate(over="ignore"):
        for token in np.random.default_rng(0).integers(0, 65, 40):
            general, state = model.step(np.array([token]), state)
            np.testing.assert_array_equal(stream.step(int(token)), general)


# (cell, peephole, nonlinearity), hidden size: layers above the first stacked (stack_pays).
STACKED = [(("lstm", False, "tanh"), 256), (("lstm", True, "tanh"), 256), (("gru", False, "tanh"), 256),
           (("rnn", False, "tanh"), 512), (("rnn", False, "relu"), 512)]


@pytest.fixture
def blas_threads(monkeypatch):
    """Sets the BLAS threads OneStream sees (stacking needs more than one), whatever the cores
    of the machine running the tests."""
    def set_threads(count):
        monkeypatch.setattr(stepper, "blas_threads", lambda: count)
    set_threads(2)
    return set_threads


def stacked_layers(cell, hidden, layers=3):
    model = make_model((cell, False, "tanh"), 0, "full", "float32", 30, hidden=hidden, layers=layers)
    return [layer.stacked for layer in model.one_stream().layers]


def test_layers_are_stacked_only_where_the_stacked_product_is_split_and_the_separate_ones_not(blas_threads):
    assert stacked_layers("lstm", 256) == stacked_layers("gru", 256) == stacked_layers("rnn", 512) \
        == [False, True, True]
    # Too small to be split even stacked, or each product already split on its own.
    for cell, hidden in (("lstm", 16), ("lstm", 200), ("lstm", 512), ("gru", 192), ("gru", 512),
                         ("rnn", 256), ("rnn", 1024)):
        assert stacked_layers(cell, hidden) == [False, False, False], (cell, hidden)


def test_nothing_is_stacked_with_one_blas_thread(blas_threads):
    blas_threads(1)
    for cell, hidden in (("lstm", 256), ("gru", 256), ("rnn", 512)):
        assert stacked_layers(cell, hidden) == [False, False, False]


@pytest.mark.parametrize("scale", [1.0, 3.0])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("head", ["full", "adaptive"])
@pytest.mark.parametrize("embedding", [0, 6])
@pytest.mark.parametrize("cells, hidden", STACKED, ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_stacked_layers_give_the_logits_of_step_to_rounding(blas_threads, cells, hidden, embedding, head,
                                                             dtype, scale):
    # Their one sum over D + H terms rounds differently from step's two sums added: up to about
    # 30 eps of the largest logit here. A wrong weight block, bias or state would be off by
    # the logits' own size.
    V = 30
    model = make_model(cells, embedding, head, dtype, V, scale=scale, hidden=hidden, layers=3)
    assert [layer.stacked for layer in model.one_stream().layers] == [False, True, True]
    eps = np.finfo(dtype).eps
    with np.errstate(all="ignore"):  # the ReLU RNN at scale 3 grows large, on both paths alike
        for lean, general in paired_logits(model, np.random.default_rng(3).integers(0, V, 60), reset_at=30):
            assert np.isfinite(general).all()
            np.testing.assert_allclose(lean, general, rtol=0, atol=1000 * eps * np.abs(general).max())


OPTIONS = [
    dict(temperature=1.0),
    dict(temperature=0.0),
    dict(temperature=0.7, top_k=5),
    dict(temperature=1.3, top_p=0.8),
    dict(temperature=0.9, top_k=12, top_p=0.95),
    dict(temperature=1e-4),  # overflows to -inf after the division: probability 0, no warning
    dict(temperature=1.0, top_k=1),
    dict(temperature=1.0, top_p=1e-9),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mask", [None, "shared", "per_row"])
def test_draw_is_choose_for_one_row(options, dtype, mask):
    V = 40
    data = np.random.default_rng(5)
    stream = make_model(CELLS[0], 0, "full", dtype, V).one_stream()
    general, lean = np.random.default_rng(9), np.random.default_rng(9)
    with np.errstate(over="ignore"):
        for k in range(200):
            logits = (data.standard_normal((1, V)) * data.choice([0.1, 3.0, 30.0])).astype(dtype)
            if k % 7 == 0:
                logits[0, data.integers(0, V, 5)] = logits.max()  # ties with the largest
            if k % 5 == 0:
                logits[0, data.integers(0, V, 3)] = -np.inf
            allowed = None
            if mask is not None:
                allowed = data.random(V if mask == "shared" else (1, V)) < 0.5
                allowed.reshape(-1)[data.integers(0, V)] = True
                logits.reshape(-1)[np.flatnonzero(allowed.reshape(-1))[0]] = 0.0  # one finite
            expected = choose(logits, general, allowed=allowed, **options)
            got = stream.draw(logits, lean, allowed=allowed, **options)
            assert isinstance(got, int) and got == int(expected[0])
    assert general.random() == lean.random()  # the same number of uniforms drawn


@pytest.mark.parametrize("u", [0.0, np.nextafter(1.0, 0.0), 0.5, 0.25, 1 / 3])
def test_draw_at_extreme_and_boundary_uniforms(u):
    V = 16
    stream = make_model(CELLS[2], 0, "full", "float64", V).one_stream()
    rng = np.random.default_rng(1)
    # Probabilities that are exact binary fractions put cumulative sums right on u.
    dyadic = np.full((1, V), -np.inf)
    dyadic[0, :4] = np.log([0.5, 0.25, 0.125, 0.125])
    for logits in (np.log(np.full((1, V), 1 / V)), dyadic, rng.standard_normal((1, V)) * 20):
        for temperature in (1.0, 0.5):
            expected = choose(logits, FixedUniform(u), temperature)
            assert stream.draw(logits, FixedUniform(u), temperature) == int(expected[0])


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_draw_at_uniforms_on_and_next_to_each_cumulative_probability(temperature):
    # The draw's binary search is on u * C, the general count on c_j / C <= u; u set to each
    # c_j / C itself and to its neighbours puts every boundary where the two could differ.
    V = 50
    stream = make_model(CELLS[0], 0, "full", "float32", V).one_stream()
    data = np.random.default_rng(8)
    for _ in range(20):
        logits = (data.standard_normal((1, V)) * 4).astype(np.float32)
        z = logits[0].astype(np.float64)
        c = np.cumsum(np.exp((z - z.max()) / temperature))
        for share in c[:-1] / c[-1]:
            for u in (np.nextafter(share, 0), share, np.nextafter(share, 1)):
                expected = choose(logits, FixedUniform(float(u)), temperature)
                assert stream.draw(logits, FixedUniform(float(u)), temperature) == int(expected[0])


def test_draw_reports_nan_logits_and_impossible_masks_like_choose():
    stream = make_model(CELLS[0], 0, "full", "float32", 8).one_stream()
    rng = np.random.default_rng(0)
    with pytest.raises(CharRNNError, match="NaN"):
        stream.draw(np.full((1, 8), np.nan, np.float32), rng)
    logits = np.zeros((1, 8), np.float32)
    logits[0, 3] = -np.inf
    allowed = np.zeros(8, bool)
    allowed[3] = True
    with pytest.raises(ValueError, match="-inf"):
        stream.draw(logits, rng, allowed=allowed)
    with pytest.raises(ValueError, match="forbids every id"):
        stream.draw(logits, rng, allowed=np.zeros(8, bool))


def texts(model, vocab, seed, **options):
    """(lean text, general text, the two generators' next uniforms)."""
    rng_lean, rng_general = np.random.default_rng(seed), np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither path may warn (overflow in the gates is expected)
        lean = "".join(generate(lean_only(model), vocab, rng_lean, **options))
        general = "".join(generate(General(model), vocab, rng_general, **options))
    return lean, general, rng_lean.random(), rng_general.random()


GENERATE_OPTIONS = [
    dict(length=120, temperature=1.0),
    dict(length=120, temperature=0.8, top_k=8, prime="the quick"),
    dict(length=120, temperature=1.2, top_p=0.9, prime="P"),
    dict(length=70, temperature=0.0, prime="jumps "),
]


@pytest.mark.parametrize("options", GENERATE_OPTIONS, ids=range(len(GENERATE_OPTIONS)))
@pytest.mark.parametrize("cells, embedding, head, dtype", MODELS, ids=MODEL_IDS)
def test_generate_gives_the_text_of_the_general_path(vocab, cells, embedding, head, dtype, options):
    # Saturated gates (exp overflowing) for half the models; a ReLU RNN would blow up instead.
    saturate = embedding and cells[2] != "relu"
    model = make_model(cells, embedding, head, dtype, len(vocab), scale=40.0 if saturate else 3.0)
    lean, general, next_lean, next_general = texts(model, vocab, 11, **options)
    assert lean == general and next_lean == next_general
    assert len(lean) == len(options.get("prime", "")) + options["length"]


@pytest.mark.parametrize("cells", CELLS, ids=lambda c: "-".join(map(str, c)))
def test_generate_stops_where_the_general_path_stops(vocab, cells):
    model = make_model(cells, 6, "full", "float32", len(vocab))
    whole = texts(model, vocab, 4, length=200, prime="over ")[0][len("over "):]
    # Stop strings taken from the text itself, so that they occur: at its very start, at the
    # end of the first chunk of 32 (where a chunk is handed out), in the middle.
    for stop in (whole[:1], whole[:3], whole[29:32], whole[31:33], whole[100:104]):
        lean, general, next_lean, next_general = texts(model, vocab, 4, length=200, prime="over ",
                                                       stop=stop)
        assert lean == general and next_lean == next_general
        assert lean.endswith(stop)


def test_generate_streams_the_same_chunks(vocab):
    model = make_model(CELLS[1], 0, "adaptive", "float32", len(vocab))
    lean = list(generate(model, vocab, np.random.default_rng(2), prime="Pack", length=100))
    general = list(generate(General(model), vocab, np.random.default_rng(2), prime="Pack", length=100))
    assert lean == general and [len(c) for c in lean] == [4, 32, 32, 32, 4]


def test_the_consumer_never_runs_under_the_samplers_errstate(vocab):
    model = make_model(CELLS[0], 0, "full", "float32", len(vocab), scale=40.0)
    before = np.geterr()
    for chunk in generate(model, vocab, np.random.default_rng(0), length=100):
        assert np.geterr() == before
    assert np.geterr() == before


def test_length_zero_prints_the_prime_only(vocab):
    model = make_model(CELLS[0], 0, "full", "float32", len(vocab))
    rng = np.random.default_rng(0)
    assert "".join(generate(model, vocab, rng, prime="the", length=0)) == "the"
    assert rng.random() == np.random.default_rng(0).random()


def test_a_subclass_that_overrides_step_gets_the_general_path(vocab):
    class Shifted(CharRNN):
        def step(self, ids, state):
            logits, state = super().step(ids, state)
            return logits + np.arange(logits.shape[1], dtype=logits.dtype), state

    spec = make_model(CELLS[0], 0, "full", "float32", len(vocab)).spec
    model = Shifted(spec)
    model.init_params(np.random.default_rng(0))
    assert model.one_stream() is None
    plain = CharRNN(spec)
    plain.params = model.params
    assert plain.one_stream() is not None
    shifted = "".join(generate(model, vocab, np.random.default_rng(1), length=60))
    assert shifted == "".join(generate(General(model), vocab, np.random.default_rng(1), length=60))
    assert shifted != "".join(generate(plain, vocab, np.random.default_rng(1), length=60))


# -- poems ----------------------------------------------------------------------------------

HAN = ("白日依山尽黄河入海流欲穷千里目更上一层楼床前明月光疑是地上霜举头望低思故乡朝辞帝彩云间江陵"
       "还两岸猿声啼不住轻舟已过万重国破在城春草木深感时花溅泪恨别鸟惊心烽火连三家书抵金搔短浑胜簪"
       "风急天高啸哀渚清沙飞回无边落萧下长滚来悲秋常作客百年多病独登台艰难苦繁鬓潦倒新停浊酒杯人生"
       "何处归路远行寒夜雨孤舟老君闻知时去无愁见空青林夏冬")
DENGGAO = "风急天高猿啸哀，渚清沙白鸟飞回。无边落木萧萧下，不尽长江滚滚来。"

POEM_OPTIONS = [
    dict(form="wujue"),
    dict(form="qijue", temperature=0.7, top_k=30, repeat_penalty=3.0),
    dict(form="wulv", top_p=0.85, rhyme=True, rhyme_scheme="shisan"),
    dict(form="qilv", tones=True, rhyme=True, forbid_corpus_lines=corpus_lines([DENGGAO])),
    dict(form="wujue", acrostic="春夏秋冬", start="春风", repeat_penalty=100.0, temperature=0.0),
    dict(form="qijue", tones=True, template="S2", temperature=1.5, top_k=5, top_p=0.9),
]


@pytest.mark.parametrize("options", POEM_OPTIONS, ids=range(len(POEM_OPTIONS)))
@pytest.mark.parametrize("cells, embedding, head, dtype",
                         [(c, e, h, d) for c, e, h, d in MODELS if (e == 0) == (d == "float32")],
                         ids=lambda v: str(v))
def test_poems_are_the_poems_of_the_general_path(cells, embedding, head, dtype, options):
    vocab = Vocab.build("\n，。" + HAN + "ab")
    model = make_model(cells, embedding, head, dtype, len(vocab))
    options = dict(options)
    form = options.pop("form")
    lean_rng, general_rng = np.random.default_rng(6), np.random.default_rng(6)
    lean = compose_scored(lean_only(model), vocab, form, lean_rng, **options)
    general = compose_scored(General(model), vocab, form, general_rng, **options)
    assert lean.poems == general.poems
    np.testing.assert_array_equal(lean.nll, general.nll)
    assert lean_rng.random() == general_rng.random()
