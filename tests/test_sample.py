"""Tests for charrnn.sample: exactness of `choose` and the semantics of `generate`."""

import re

import numpy as np
import pytest

from charrnn.corpus import Vocab
from charrnn.errors import CharRNNError, UsageError
from charrnn.sample import choose, generate

TEXT = "the quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs!\n"


class FakeModel:
    """A small deterministic recurrent model honouring the sampling contract.

    The state remembers recent inputs, so the prime changes what follows. Every call to `step`
    records its input ids, which are checked to be a (B,) integer array.
    """

    def __init__(self, vocab_size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        self.dtype = np.dtype(np.float32)
        self.embed = rng.standard_normal((vocab_size, vocab_size)).astype(np.float32)
        self.head = (2 * rng.standard_normal((vocab_size, vocab_size))).astype(np.float32)
        self.inputs = []

    def init_state(self, batch_size):
        return [(np.zeros((batch_size, self.vocab_size), dtype=self.dtype),)]

    def step(self, ids, state):
        assert ids.ndim == 1 and np.issubdtype(ids.dtype, np.integer)
        self.inputs.append(ids.copy())
        (h,) = state[0]
        h = np.tanh(0.5 * h + self.embed[ids])
        return h @ self.head, [(h,)]


class FixedUniform:
    """Stands in for np.random.Generator: every uniform it hands out is `u`."""

    def __init__(self, u):
        self.u = u

    def random(self, size=None):
        return np.full(size, self.u)


@pytest.fixture
def vocab():
    return Vocab.build(TEXT)


@pytest.fixture
def model(vocab):
    return FakeModel(len(vocab))


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def assert_frequencies(ids, probs):
    """Counts of ids consistent with probs: each frequency within 4 standard errors, ids of
    probability 0 never drawn, and a chi-square bound over all the possible ids together."""
    n = len(ids)
    counts = np.bincount(ids, minlength=len(probs))
    se = np.sqrt(probs * (1 - probs) / n)
    np.testing.assert_array_less(np.abs(counts / n - probs), 4 * se + 1e-12)
    possible = probs > 0
    expected = n * probs[possible]
    chi2 = np.sum((counts[possible] - expected) ** 2 / expected)
    dof = possible.sum() - 1
    assert chi2 <= dof + 5 * np.sqrt(2 * dof), chi2  # about 4 standard deviations of chi2(dof)


def greedy_text(model, vocab, context, length):
    """Reference greedy decoding, one step at a time, without the code under test."""
    state = model.init_state(1)
    for ch in context:
        logits, state = model.step(np.array([vocab.index[ch]]), state)
    out = []
    for _ in range(length):
        token = int(np.argmax(logits[0]))
        out.append(vocab.chars[token])
        logits, state = model.step(np.array([token]), state)
    return "".join(out)


def split_samples(text):
    """The sample texts of the multi-sample format (documented in `generate`)."""
    assert text.startswith("--- sample 1 ---\n")
    parts = re.split(r"\n--- sample \d+ ---\n", text[len("--- sample 1 ---\n") :])
    return parts


# --------------------------------------------------------------------------------------------
# choose
# --------------------------------------------------------------------------------------------

LOGITS = np.log(np.array([0.05, 0.4, 0.1, 0.3, 0.15]))


def test_greedy_is_argmax_and_uses_no_randomness():
    logits = np.random.default_rng(0).standard_normal((6, 11)).astype(np.float32)
    rng = np.random.default_rng(1)
    before = rng.bit_generator.state
    ids = choose(logits, rng, temperature=0)
    assert ids.dtype == np.int64 and ids.shape == (6,)
    np.testing.assert_array_equal(ids, logits.argmax(axis=1))
    assert rng.bit_generator.state == before


def test_greedy_respects_allowed_and_breaks_ties_by_first_id():
    logits = np.array([[5.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    allowed = np.array([[False, True, True, True], [False, False, True, True]])
    np.testing.assert_array_equal(choose(logits, None, temperature=0, allowed=allowed), [2, 2])


@pytest.mark.parametrize("per_row", [False, True])
def test_forbidden_ids_are_never_drawn(per_row):
    rng = np.random.default_rng(2)
    n, v = 10_000, 7
    logits = rng.standard_normal((n, v))
    logits[:, [0, 3]] += 20  # the forbidden ids would otherwise win almost every draw
    if per_row:
        allowed = rng.random((n, v)) < 0.5
        allowed[:, 1] = True
        allowed[:, [0, 3]] = False
    else:
        allowed = np.array([False, True, True, False, True, True, True])
    ids = choose(logits, rng, allowed=allowed)
    rows = np.arange(n)
    assert np.all(np.broadcast_to(allowed, (n, v))[rows, ids])
    assert set(np.unique(ids)) == {1, 2, 4, 5, 6}


@pytest.mark.parametrize("batch", [1, 3])
def test_extreme_uniforms_never_reach_zero_probability_ids(batch):
    # Ids 0, 1, 5, 6 are forbidden or underflow to probability 0 in float64.
    logits = np.tile([0.0, -1e4, 2.0, 1.0, 3.0, -1e4, 0.0], (batch, 1))
    allowed = np.array([False, True, True, True, True, True, False])
    lowest = choose(logits, FixedUniform(0.0), allowed=allowed)
    highest = choose(logits, FixedUniform(np.nextafter(1.0, 0.0)), allowed=allowed)
    np.testing.assert_array_equal(lowest, [2] * batch)
    np.testing.assert_array_equal(highest, [4] * batch)


@pytest.mark.parametrize(
    "options, kept",
    [
        ({}, [0, 1, 2, 3, 4]),
        ({"top_k": 2}, [1, 3]),
        ({"top_k": 5}, [0, 1, 2, 3, 4]),
        ({"top_p": 0.3}, [1]),
        ({"top_p": 0.65}, [1, 3]),
        ({"top_p": 0.75}, [1, 3, 4]),
        ({"top_k": 3, "top_p": 0.8}, [1, 3]),  # top-p acts on the renormalised top-3: .47, .35
        ({"allowed": np.array([True, False, True, True, True]), "top_k": 2}, [3, 4]),
    ],
)
def test_draws_follow_the_renormalised_kept_probabilities(options, kept):
    probs = np.zeros(5)
    probs[kept] = np.exp(LOGITS[kept])
    probs /= probs.sum()
    ids = choose(np.tile(LOGITS, (200_000, 1)), np.random.default_rng(3), **options)
    assert_frequencies(ids, probs)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_draws_follow_the_tempered_softmax(temperature):
    logits = np.array([1.5, -0.5, 0.0, 2.0, 0.3, -2.0], dtype=np.float32)
    ids = choose(np.tile(logits, (200_000, 1)), np.random.default_rng(4), temperature=temperature)
    assert_frequencies(ids, softmax(logits.astype(np.float64) / temperature))


def test_small_temperatures_approach_greedy_without_overflow():
    logits = np.array([[0.0, -1e300, 2.0, 1.5, 1e-3], [-1e300, 1e300, 0.0, 1.0, 2.0]])
    for temperature in (1e-2, 1e-300):
        rows = np.repeat(logits, 1000, axis=0)
        ids = choose(rows, np.random.default_rng(5), temperature=temperature)
        np.testing.assert_array_equal(ids, np.repeat([2, 1], 1000))


def test_top_k_ties_with_the_kth_logit_are_kept():
    ids = choose(np.tile([1.0, 3.0, 3.0, 0.0], (2000, 1)), np.random.default_rng(6), top_k=1)
    assert set(np.unique(ids)) == {1, 2}


def test_tiny_top_p_keeps_the_most_probable_id():
    ids = choose(np.tile(LOGITS, (2000, 1)), np.random.default_rng(7), top_p=1e-9)
    assert np.all(ids == 1)


def test_top_p_nucleus_stops_at_the_id_whose_predecessors_reach_the_mass():
    # With probabilities .5, .25, .125, .125 the most probable id alone holds top_p = 0.5, so
    # no other id may be drawn, not even with the largest uniform; just above 0.5 the next id
    # joins. (The exact boundary: the mass before id 1 equals top_p * total in floating point.)
    logits = np.log(np.array([[0.5, 0.25, 0.125, 0.125]]))
    highest = FixedUniform(np.nextafter(1.0, 0.0))
    np.testing.assert_array_equal(choose(logits, highest, top_p=0.5), [0])
    np.testing.assert_array_equal(choose(logits, highest, top_p=0.5 + 1e-9), [1])
    np.testing.assert_array_equal(choose(logits, highest, top_p=0.75 + 1e-9), [3])


def test_no_op_options_give_the_same_draws():
    logits = np.random.default_rng(8).standard_normal((500, 9))
    plain = choose(logits, np.random.default_rng(9))
    np.testing.assert_array_equal(choose(logits, np.random.default_rng(9), top_k=9), plain)
    np.testing.assert_array_equal(choose(logits, np.random.default_rng(9), top_k=100), plain)
    np.testing.assert_array_equal(choose(logits, np.random.default_rng(9), top_p=1.0), plain)


@pytest.mark.parametrize(
    "options, option_name",
    [
        ({"temperature": -0.1}, "--temperature must be >= 0"),
        ({"temperature": float("nan")}, "--temperature"),
        ({"temperature": float("inf")}, "--temperature"),
        ({"top_k": 0}, "--top-k"),
        ({"top_k": -3}, "--top-k"),
        ({"top_k": 2.5}, "--top-k"),
        ({"top_p": 0.0}, "--top-p"),
        ({"top_p": 1.5}, "--top-p"),
        ({"top_p": float("nan")}, "--top-p"),
    ],
)
def test_out_of_range_options_are_usage_errors(options, option_name):
    with pytest.raises(UsageError, match=re.escape(option_name)):
        choose(np.zeros((1, 3)), np.random.default_rng(0), **options)


def test_malformed_calls_are_programming_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="forbids every id"):
        allowed = np.array([[True, False, False], [False, False, False]])
        choose(np.zeros((2, 3)), rng, allowed=allowed)
    with pytest.raises(ValueError, match="shape"):
        choose(np.zeros((2, 3)), rng, allowed=np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        choose(np.zeros(3), rng)


def test_nan_logits_are_reported_as_a_model_problem():
    with pytest.raises(CharRNNError, match="NaN"):
        choose(np.array([[0.0, np.nan, 1.0]]), np.random.default_rng(0))


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------


def text_of(model, vocab, seed=0, **options):
    return "".join(generate(model, vocab, np.random.default_rng(seed), **options))


def test_same_seed_same_text_and_different_seeds_differ(model, vocab):
    first = text_of(model, vocab, seed=1, prime="the ", length=80)
    assert text_of(model, vocab, seed=1, prime="the ", length=80) == first
    assert text_of(model, vocab, seed=2, prime="the ", length=80) != first
    assert len(first) == 4 + 80


def test_greedy_continuation_matches_manual_argmax_stepping(model, vocab):
    expected = "the " + greedy_text(model, vocab, "the ", 60)
    assert text_of(model, vocab, seed=1, prime="the ", length=60, temperature=0) == expected
    assert text_of(model, vocab, seed=2, prime="the ", length=60, temperature=0) == expected


@pytest.mark.parametrize(
    "text, start", [("\t" + TEXT, "\n"), ("\t" + TEXT.replace("\n", ""), " "), ("\tabc", "\t")]
)
def test_empty_prime_starts_from_a_line_break_else_a_space_else_id_0(text, start):
    # The tab has the lowest code point (id 0), so these tell the three start rules apart.
    vocab = Vocab.build(text)
    model = FakeModel(len(vocab))
    text = text_of(model, vocab, length=30)
    assert model.inputs[0].tolist() == [vocab.index[start]]
    assert len(text) == 30


def test_single_sample_streams_the_prime_then_small_chunks(model, vocab):
    chunks = list(generate(model, vocab, np.random.default_rng(0), prime="lazy", length=100))
    assert chunks[0] == "lazy"
    assert all(0 < len(c) <= 50 for c in chunks[1:])
    assert sum(len(c) for c in chunks[1:]) == 100


def test_unknown_prime_characters_are_listed(model, vocab):
    with pytest.raises(CharRNNError, match=r"--prime.*'Z'.*'~'.*--on-unknown drop") as info:
        generate(model, vocab, np.random.default_rng(0), prime="Zap ~the", length=5)
    assert "\n" not in str(info.value)


def test_drop_mode_leaves_unknown_prime_characters_out(model, vocab):
    dropped = text_of(model, vocab, prime="Zap ~the", length=20, on_unknown="drop")
    assert dropped == text_of(model, vocab, prime="ap the", length=20)
    assert dropped.startswith("ap the")


def test_stop_ends_right_after_the_first_generated_occurrence(model, vocab):
    full = text_of(model, vocab, seed=3, prime="dog", length=120)
    generated = full[3:]
    stop = generated[40:42]
    first_end = generated.index(stop) + len(stop)
    stopped = text_of(model, vocab, seed=3, prime="dog", length=120, stop=stop)
    assert stopped == "dog" + generated[:first_end]


@pytest.mark.parametrize("num_samples", [1, 2])
def test_stop_can_match_the_very_first_generated_characters(model, vocab, num_samples):
    generated = greedy_text(model, vocab, "fox", 30)
    text = text_of(model, vocab, prime="fox", length=30, stop=generated[:2], temperature=0,
                   num_samples=num_samples)
    expected = "fox" + generated[:2]
    assert (text if num_samples == 1 else split_samples(text)) == (
        expected if num_samples == 1 else [expected] * num_samples
    )


def test_stop_occurrences_in_the_prime_do_not_count(model, vocab):
    # A prime ending with the stop character, whose greedy continuation also contains it.
    stop, generated = next(
        (c, g) for c in vocab.chars if c in (g := greedy_text(model, vocab, "the " + c, 50))
    )
    expected = "the " + stop + generated[: generated.index(stop) + 1]
    text = text_of(model, vocab, prime="the " + stop, length=50, stop=stop, temperature=0)
    assert text == expected


def test_stop_that_cannot_be_generated_is_rejected(model, vocab):
    with pytest.raises(CharRNNError, match=r"--stop.*'Z'"):
        generate(model, vocab, np.random.default_rng(0), stop="Z")
    with pytest.raises(UsageError, match="--stop"):
        generate(model, vocab, np.random.default_rng(0), stop="")


def test_many_samples_go_through_the_batch_in_one_pass(model, vocab):
    text = text_of(model, vocab, prime="over", length=40, num_samples=8)
    assert {len(ids) for ids in model.inputs} == {8}
    assert len(model.inputs) == len("over") + 40 - 1  # one step per prime char and new char
    samples = split_samples(text)
    assert len(samples) == 8
    assert all(s.startswith("over") and len(s) == 44 for s in samples)
    assert len(set(samples)) > 1


def test_many_samples_stop_independently(model, vocab):
    text = text_of(model, vocab, seed=4, length=60, num_samples=8, stop="o")
    samples = split_samples(text)
    assert len(samples) == 8
    stopped = 0
    for s in samples:
        if s.endswith("o"):
            stopped += 1
            assert "o" not in s[:-1]
        else:
            assert len(s) == 60 and "o" not in s
    assert stopped >= 2 and len({len(s) for s in samples}) > 1


def test_many_samples_match_single_greedy_samples(model, vocab):
    text = text_of(model, vocab, prime="jugs", length=25, num_samples=3, temperature=0)
    assert split_samples(text) == ["jugs" + greedy_text(model, vocab, "jugs", 25)] * 3


def test_length_zero_outputs_only_the_prime_without_stepping(model, vocab):
    assert list(generate(model, vocab, np.random.default_rng(0), prime="fox", length=0)) == ["fox"]
    assert list(generate(model, vocab, np.random.default_rng(0), length=0)) == []
    assert text_of(model, vocab, prime="fox", length=0, num_samples=2) == (
        "--- sample 1 ---\nfox\n--- sample 2 ---\nfox"
    )
    assert model.inputs == []


@pytest.mark.parametrize(
    "options, message",
    [
        ({"length": -1}, "--length must be an integer from 0 to 100,000,000"),
        ({"length": 10**20}, "--length"),
        ({"num_samples": 0}, "--num-samples must be an integer from 1 to 100,000"),
        ({"num_samples": 10**20}, "--num-samples"),
        ({"temperature": -1.0}, "--temperature"),
        ({"top_p": 2.0}, "--top-p"),
        ({"on_unknown": "skip"}, "--on-unknown"),
    ],
)
def test_bad_options_fail_before_any_output(model, vocab, options, message):
    with pytest.raises(UsageError, match=message):
        generate(model, vocab, np.random.default_rng(0), prime="the", **options)
    assert model.inputs == []


def test_vocabulary_and_model_size_mismatch_is_reported(vocab):
    with pytest.raises(CharRNNError, match="inconsistent"):
        generate(FakeModel(len(vocab) + 1), vocab, np.random.default_rng(0))
