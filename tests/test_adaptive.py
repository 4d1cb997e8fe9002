"""The adaptive softmax head: exact and normalised, its gradients, its bias start, its place in
every command, and (with PyTorch installed) the same numbers as nn.AdaptiveLogSoftmaxWithLoss."""

import dataclasses
import json

import numpy as np
import pytest
import yaml

from charrnn.adaptive import AdaptiveHead, default_cutoffs, frequency_order, projection_sizes
from charrnn.checkpoint import load_model
from charrnn.gradcheck import check_model, relative_error
from charrnn.model import CharRNN, ModelSpec

from runs import invoke, records

V, H = 23, 8
COUNTS = np.array([50, 3, 40, 1, 0, 30, 2, 9, 7, 20, 1, 5, 6, 4, 2, 10, 1, 1, 8, 3, 0, 2, 12])


def adaptive_model(cutoffs=(5, 12), div=2.0, embedding=4, dtype=np.float64, layers=1, seed=0, **kw):
    model = CharRNN(ModelSpec(V, H, layers, embedding_size=embedding, head="adaptive", head_cutoffs=list(cutoffs),
                    head_div=div, head_order=frequency_order(COUNTS), dtype=dtype, **kw))
    rng = np.random.default_rng(seed)
    model.init_params(rng)
    for key in model.params:  # nonzero biases, so that their gradients are exercised
        model.params[key] += rng.normal(0, 0.1, size=model.params[key].shape).astype(dtype)
    return model


def test_frequency_order_cutoffs_and_projections():
    order = frequency_order(COUNTS)
    assert order[:3] == [0, 2, 5] and sorted(order) == list(range(V))
    assert order.index(4) < order.index(20)  # ties (both 0) by id
    cutoffs = default_cutoffs(COUNTS, (0.9, 0.99))
    covered = np.cumsum(np.sort(COUNTS)[::-1]) / COUNTS.sum()
    assert covered[cutoffs[0] - 1] >= 0.9 > covered[cutoffs[0] - 2]
    assert covered[cutoffs[1] - 1] >= 0.99 > covered[cutoffs[1] - 2]
    assert len(default_cutoffs(COUNTS)) == 3  # 80%, 95%, 99%
    assert default_cutoffs(np.array([5, 1])) == [1]  # no empty cluster
    assert projection_sizes(256, 2, 4.0) == [64, 16]


@pytest.mark.parametrize("cutoffs", [(5, 12), (3,), (1, 2, 20)])
def test_rows_are_normalised_and_match_the_training_loss(cutoffs):
    model = adaptive_model(cutoffs)
    rng = np.random.default_rng(1)
    h = rng.normal(size=(6, H))
    logp = model.adaptive.log_probs(model.params, h)
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-12)
    ids = rng.integers(0, V, size=6)
    nll, _, _ = model.adaptive.loss(model.params, h.copy(), ids)
    np.testing.assert_allclose(nll, -logp[np.arange(6), ids], rtol=1e-10)


@pytest.mark.parametrize("layers, dropout", [(1, 0.0), (2, 0.3)])
@pytest.mark.parametrize("embedding", [0, 4], ids=["onehot", "embed"])
def test_every_gradient_matches_finite_differences(layers, dropout, embedding):
    model = adaptive_model(embedding=embedding, layers=layers, dropout=dropout)
    rng = np.random.default_rng(2)
    # targets in the shortlist and in both clusters
    order = np.array(model.spec.head_order)
    y = order[np.array([[0, 6, 14, 2, 20], [13, 1, 7, 22, 3]])]
    x = rng.integers(0, V, size=(2, 5))
    state = [tuple(rng.normal(0, 0.5, size=a.shape) for a in layer) for layer in model.init_state(2)]
    errors = check_model(model, x, y, state, dropout_seed=3 if dropout else None)
    assert {f"head.tail.{i}.{n}" for i in range(2) for n in "PWb"} <= set(errors)
    assert {"state.0.h", "state.0.c"} <= set(errors)
    assert max(errors.values()) < 1e-6, errors


def test_the_gradient_check_sees_a_broken_tail_gradient(monkeypatch):
    model = adaptive_model()
    real = model.adaptive.loss

    def broken(*args, **kwargs):
        nll, grads, dh = real(*args, **kwargs)
        if grads is not None:
            grads["head.tail.1.P"] = grads["head.tail.1.P"] * 1.01
        return nll, grads, dh
    monkeypatch.setattr(model.adaptive, "loss", broken)
    order = np.array(model.spec.head_order)
    errors = check_model(model, np.zeros((1, 3), dtype=int), order[[[15, 16, 2]]][0][None], model.init_state(1))
    assert errors["head.tail.1.P"] > 1e-3 and errors["head.W"] < 1e-6


def test_unigram_biases_make_the_first_prediction_the_unigram_distribution():
    model = adaptive_model(dtype=np.float64)
    for key in model.params:
        if key.startswith("head") and not key.endswith(".b"):
            model.params[key][...] = 0.0
    model.set_unigram_biases(COUNTS)
    logp = model.adaptive.log_probs(model.params, np.zeros((1, H)))[0]
    expected = (COUNTS + 1.0) / (COUNTS + 1.0).sum()
    np.testing.assert_allclose(np.exp(logp), expected, rtol=1e-10)


def test_a_wrong_head_description_is_refused():
    with pytest.raises(ValueError, match="cutoffs"):
        AdaptiveHead(H, V, [12, 5], 2.0, frequency_order(COUNTS))
    with pytest.raises(ValueError, match="permutation"):
        AdaptiveHead(H, V, [5], 2.0, list(range(V - 1)) + [0])


def test_the_same_log_probabilities_as_pytorch():
    torch = pytest.importorskip("torch")
    model = adaptive_model(cutoffs=(5, 12), div=2.0)
    asm = torch.nn.AdaptiveLogSoftmaxWithLoss(H, V, cutoffs=[5, 12], div_value=2.0, head_bias=True)
    asm = asm.double()
    p = model.params
    with torch.no_grad():
        asm.head.weight.copy_(torch.from_numpy(p["head.W"].T))
        asm.head.bias.copy_(torch.from_numpy(p["head.b"]))
        for i in range(2):
            project, out = asm.tail[i][0], asm.tail[i][1]
            biased = torch.nn.Linear(out.in_features, out.out_features, bias=True).double()
            biased.weight.copy_(torch.from_numpy(p[f"head.tail.{i}.W"].T))
            biased.bias.copy_(torch.from_numpy(p[f"head.tail.{i}.b"]))
            asm.tail[i][1] = biased  # torch's tail has no bias; ours starts at the cluster's log frequencies
            project.weight.copy_(torch.from_numpy(p[f"head.tail.{i}.P"].T))
    h = np.random.default_rng(4).normal(size=(7, H))
    ours = model.adaptive.log_probs(p, h)
    with torch.no_grad():
        theirs = asm.log_prob(torch.from_numpy(h)).numpy()  # columns by rank
    order = np.array(model.spec.head_order)
    np.testing.assert_allclose(ours[:, order], theirs, rtol=0, atol=1e-9)
    ids = np.random.default_rng(5).integers(0, V, size=7)
    ours_loss = model.adaptive.loss(p, h.copy(), ids)[0].mean()
    with torch.no_grad():
        theirs_loss = asm(torch.from_numpy(h), torch.from_numpy(model.adaptive.rank[ids])).loss.item()
    assert abs(ours_loss - theirs_loss) < 1e-9


# -- through the commands -------------------------------------------------------------------


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory, repo_root):
    import gzip
    directory = tmp_path_factory.mktemp("adaptive")
    with gzip.open(repo_root / "corpora" / "tang" / "train.txt.gz", "rt", encoding="utf-8") as fh:
        poems = [next(fh) for _ in range(300)]
    corpus = directory / "poems.txt"
    corpus.write_text("".join(poems), encoding="utf-8")
    config = {"name": "a", "data": {"path": str(corpus), "val_fraction": 0.1},
              "model": {"cell": "lstm", "hidden_size": 16, "num_layers": 1, "embedding_size": 8,
                        "head": "adaptive"},
              "train": {"batch_size": 4, "seq_len": 16, "max_steps": 4, "eval_every": 2, "log_every": 1,
                        "sample_length": 5, "seed": 3}}
    (directory / "c.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    result = invoke("train", "--config", directory / "c.yaml", "--out", directory / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    return directory


def test_train_eval_info_sample_and_poem_with_the_adaptive_head(adaptive_run):
    ckpt = adaptive_run / "run" / "last.npz"
    model, vocab, meta, _ = load_model(ckpt)
    assert meta["format_version"] == 2 and model.spec.head == "adaptive" and len(model.spec.head_cutoffs) == 3
    first = records(adaptive_run / "run", "train")[0]
    assert first["loss"] < np.log(len(vocab))  # the unigram start: below a uniform guess
    info = invoke("info", ckpt).output
    assert "adaptive head" in info
    evaluated = invoke("eval", ckpt, "--val")
    assert evaluated.exit_code == 0, evaluated.output
    assert f"{meta['progress']['best_val']:.4f}" in evaluated.output  # the same loss as training saw
    sample = invoke("sample", ckpt, "--length", 30, "--seed", 1)
    assert sample.exit_code == 0 and len(sample.output) >= 30
    poem = invoke("poem", ckpt, "--form", "qijue", "--strict", "--num", 20, "--seed", 1,
                  "--acrostic", "春花秋月" if all(c in vocab.index for c in "春花秋月") else None)
    assert poem.exit_code == 0, poem.output
    (adaptive_run / "p.txt").write_text(poem.stdout, encoding="utf-8")
    m = json.loads(invoke("poem-metrics", adaptive_run / "p.txt", "--json").output)
    assert m["overall"]["template"] == m["overall"]["rhyme"] == 1.0


def test_resume_and_processes_give_the_same_numbers(adaptive_run):
    run, again = adaptive_run / "run", adaptive_run / "again"
    result = invoke("train", "--resume", run / "last.npz", "--set", "train.max_steps=6",
                    "--out", again, "--no-progress")
    assert result.exit_code == 0, result.output
    split = adaptive_run / "split"
    result = invoke("train", "--config", adaptive_run / "c.yaml", "--set", "train.max_steps=6",
                    "--set", "train.processes=2", "--out", split, "--no-progress")
    assert result.exit_code == 0, result.output
    a, _, _, _ = load_model(again / "last.npz")
    b, _, _, _ = load_model(split / "last.npz")
    for key in a.params:
        assert relative_error(a.params[key], b.params[key]) < 1e-5, key


def test_a_format_1_checkpoint_loads_as_the_full_head_model_it_was(tmp_path):
    """Written as charrnn wrote format 1: no head entries in the model description."""
    from charrnn.corpus import Vocab

    vocab = Vocab.build("abcdefg\n")
    model = CharRNN(ModelSpec(len(vocab), 6, 1, embedding_size=3))
    model.init_params(np.random.default_rng(0))
    description = {k: v for k, v in dataclasses.asdict(model.spec).items() if not k.startswith("head")}
    meta = {"format_version": 1, "charrnn_version": "0.1.0", "model": description,
            "vocab": vocab.to_json()}
    path = tmp_path / "old.npz"
    np.savez(path, meta=np.array(json.dumps(meta)), **model.params)
    loaded, loaded_vocab, meta_read, _ = load_model(path)
    assert meta_read["format_version"] == 1 and loaded.spec.head == "full" and loaded_vocab == vocab
    ids = np.array([0, 3])
    np.testing.assert_array_equal(loaded.step(ids, loaded.init_state(2))[0],
                                  model.step(ids, model.init_state(2))[0])
    assert "full softmax" in invoke("info", path).output
