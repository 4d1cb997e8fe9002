"""The training loop against a reference written out from the README's description of it:
windows in order, the hidden state carried from one to the next and zeroed at each epoch, the
clipped gradient, the scheduled learning rate. Bit-identical weights, or a step of the loop's
bookkeeping went wrong in a way no gradient check can see."""

import numpy as np
import pytest

from charrnn.checkpoint import load_checkpoint
from charrnn.config import load_config
from charrnn.corpus import BatchStream
from charrnn.encoded import load_corpus
from charrnn.optim import clip_grad_norm, learning_rate, make_optimizer
from charrnn.start import initial_model
from charrnn.train import train

STEPS = 7  # windows_per_epoch is 3 below: two epoch boundaries


@pytest.fixture
def cfg(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 6, encoding="utf-8")
    overrides = [f"data.path={corpus}", "data.val_fraction=0.2", "model.hidden_size=8",
                 "model.num_layers=2", "model.dropout=0.0", "train.batch_size=4", "train.seq_len=16",
                 f"train.max_steps={STEPS}", "train.eval_every=1000", "train.sample_length=0",
                 "train.schedule=cosine", "train.warmup_steps=2", "train.grad_clip=0.5",
                 "train.learning_rate=0.01", "train.dtype=float64", "train.log_every=1"]
    return load_config(None, overrides)


def _reference_weights(cfg) -> tuple[dict, list, int]:
    t = cfg.train
    loaded = load_corpus(cfg, warn=lambda message: None)
    vocab, train_ids = loaded.vocab, loaded.train_ids
    stream = BatchStream(train_ids, t.batch_size, t.seq_len)
    assert stream.windows_per_epoch == 3
    model, rng = initial_model(cfg, train_ids, len(vocab))
    optimizer = make_optimizer(t.optimizer, model.params, beta1=t.beta1, beta2=t.beta2, eps=t.eps,
                               weight_decay=t.weight_decay)
    epoch = 0
    for step in range(STEPS):
        k = step % stream.windows_per_epoch
        if k == 0:
            state = model.init_state(t.batch_size)
        x, y = stream.window(k)
        loss, grads, state = model.loss_and_grads(x, y, state, rng)
        clip_grad_norm(grads, t.grad_clip)
        optimizer.step(model.params, grads, learning_rate(step, t.learning_rate, t.schedule,
                                                          t.warmup_steps, STEPS, min_lr=t.min_lr))
        epoch += k == stream.windows_per_epoch - 1
    return model.params, state, epoch


def test_training_matches_the_loop_written_out(cfg, tmp_path):
    outcome = train(cfg, out_dir=str(tmp_path / "run"), show_progress=False, say=lambda message: None)
    arrays, meta = load_checkpoint(tmp_path / "run" / "last.npz")
    want, state, epochs = _reference_weights(cfg)
    for name, value in want.items():
        np.testing.assert_array_equal(arrays[name], value, err_msg=name)
    for layer, (h, c) in enumerate(state):
        np.testing.assert_array_equal(arrays[f"state.{layer}.h"], h)
        np.testing.assert_array_equal(arrays[f"state.{layer}.c"], c)
    assert meta["progress"]["step"] == STEPS
    assert meta["progress"]["epoch"] == outcome.progress.epoch == epochs == 2


def test_best_checkpoint_only_for_a_strictly_lower_validation_loss(cfg, tmp_path, monkeypatch):
    import charrnn.train as train_module

    scripted = iter([3.0, 3.0005, 3.0, 2.5])
    monkeypatch.setattr(train_module, "evaluate", lambda *args, **kwargs: next(scripted))
    cfg.train.max_steps, cfg.train.eval_every = 4, 1
    train(cfg, out_dir=str(tmp_path / "run"), show_progress=False, say=lambda message: None)
    best = [load_checkpoint(tmp_path / "run" / "best.npz")[1]["progress"]]
    assert best[0]["step"] == 4 and best[0]["best_val"] == 2.5
    # the same run stopped after step 3: worse by 5e-4, then equal, replaced nothing
    scripted = iter([3.0, 3.0005, 3.0])
    cfg.train.max_steps = 3
    train(cfg, out_dir=str(tmp_path / "run3"), show_progress=False, say=lambda message: None)
    assert load_checkpoint(tmp_path / "run3" / "best.npz")[1]["progress"]["step"] == 1


def test_a_rollback_keeps_the_time_spent_on_the_steps_it_undid(cfg, tmp_path, monkeypatch):
    # A clock that moves one second per reading: each step attempt costs exactly one second.
    import itertools
    import time
    import types

    import charrnn.train as train_module
    from charrnn.model import CharRNN

    ticks = itertools.count()
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(
        perf_counter=lambda: float(next(ticks)), strftime=time.strftime))
    real, calls = CharRNN.loss_and_grads, []

    def fifth_step_diverges(self, *args, **kwargs):
        loss, grads, state = real(self, *args, **kwargs)
        calls.append(loss)
        return (float("nan") if len(calls) == 5 else loss), grads, state

    monkeypatch.setattr(CharRNN, "loss_and_grads", fifth_step_diverges)
    cfg.train.max_steps, cfg.train.eval_every, cfg.train.max_time = 8, 3, None
    train(cfg, out_dir=str(tmp_path / "run"), show_progress=False, say=lambda message: None)
    progress = load_checkpoint(tmp_path / "run" / "last.npz")[1]["progress"]
    # steps 1-4, the diverging attempt, then steps 4-8 again after the rollback to step 3
    assert (progress["step"], progress["rollbacks"]) == (8, 1)
    assert len(calls) == 10 and progress["elapsed"] == 10.0


@pytest.fixture
def one_second_per_step(monkeypatch):
    """A clock that moves one second per reading: each step takes exactly one second."""
    import itertools
    import time
    import types

    import charrnn.train as train_module

    ticks = itertools.count()
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(
        perf_counter=lambda: float(next(ticks)), strftime=time.strftime))


def _timed(cfg, max_time):
    from charrnn.config import config_to_dict

    raw = config_to_dict(cfg)
    raw["train"].update(max_steps="auto", max_time=max_time, warmup_steps=40, eval_every=1000)
    return load_config(None, base=raw)


def test_max_steps_auto_lays_the_schedule_over_the_budget(cfg, tmp_path, one_second_per_step):
    from charrnn import metrics

    # Steps 6-35 take 30 s: the 65.5 s left after step 35 hold 65 more, so the horizon is 100.
    outcome = train(_timed(cfg, 100.5), out_dir=str(tmp_path / "run"), show_progress=False,
                    say=lambda message: None)
    progress = load_checkpoint(tmp_path / "run" / "last.npz")[1]["progress"]
    assert (progress["horizon"], progress["step"], outcome.progress.step) == (100, 100, 100)
    records = metrics.read(tmp_path / "run" / "metrics.jsonl")
    assert [r["horizon"] for r in records if r["event"] == "horizon"] == [100]
    lrs = [r["lr"] for r in records if r["event"] == "train"]
    t = cfg.train
    assert lrs[-1] == learning_rate(99, t.learning_rate, "cosine", 40, 100, min_lr=t.min_lr)


def test_a_run_stopped_in_its_pilot_resumes_to_the_same_weights(cfg, tmp_path, one_second_per_step):
    from charrnn.train import resume

    quiet = {"show_progress": False, "say": lambda message: None}
    train(_timed(cfg, 100.5), out_dir=str(tmp_path / "straight"), **quiet)
    train(_timed(cfg, 20.5), out_dir=str(tmp_path / "cut"), **quiet)
    stopped = load_checkpoint(tmp_path / "cut" / "last.npz")[1]["progress"]
    assert stopped["horizon"] is None and stopped["step"] == 21 and stopped["pilot_seconds"] == 16.0
    resume(str(tmp_path / "cut" / "last.npz"), overrides=("train.max_time=100.5",), **quiet)
    a, meta_a = load_checkpoint(tmp_path / "straight" / "last.npz")
    b, meta_b = load_checkpoint(tmp_path / "cut" / "last.npz")
    assert meta_b["progress"]["horizon"] == meta_a["progress"]["horizon"] == 100
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # Once timed, the horizon stays: a larger budget on resume does not stretch the schedule.
    resume(str(tmp_path / "straight" / "last.npz"), overrides=("train.max_time=1000",), **quiet)
    assert load_checkpoint(tmp_path / "straight" / "last.npz")[1]["progress"]["step"] == 100
