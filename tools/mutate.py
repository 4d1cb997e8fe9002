"""A mutation pass over charrnn's numeric core: does the suite notice a small wrong change?

Each mutant below is one textual edit to one file of charrnn/ (a sign, an off-by-one, a dropped
term, a skipped call) and the tests that should notice it. For each, this script copies the
working tree to a scratch directory, applies the edit there (the source tree is never touched),
runs those tests with the copy first on the import path, and reports the first failing test:
"killed". A mutant no test fails is a "SURVIVED" line, the thing to act on.

    .venv/bin/python tools/mutate.py               # all mutants, a Markdown table on stdout
    .venv/bin/python tools/mutate.py M07 M12       # only these
    .venv/bin/python tools/mutate.py --list        # ids, files and what each changes

Before any mutant, the unmutated copy must pass every selection (else a "kill" would mean
nothing), and each edit's text must occur exactly once in its file. Mutants known to change
nothing observable are listed with their reason and not run. Development tool only: nothing in
charrnn/ imports it, and it needs nothing beyond the test dependencies.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("charrnn", "tests", "configs", "corpora", "docs", "README.md", "Makefile", "setup.cfg",
          "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str                 # file under the repository root
    old: str                  # text occurring exactly once in that file
    new: str
    what: str                 # the change, in words
    tests: tuple[str, ...]    # pytest arguments: files, node ids, -k expressions
    equivalent: str = ""      # why no test can observe it (then it is not run)


def m(id, path, old, new, what, *tests, equivalent=""):
    return Mutant(id, path, old, new, what, tuple(tests), equivalent)


MODEL, FUNC = "charrnn/model.py", "charrnn/functional.py"
LSTM, GRU, RNN, CELL = "charrnn/lstm.py", "charrnn/gru.py", "charrnn/rnn.py", "charrnn/cell_base.py"
OPTIM, CORPUS, TRAIN = "charrnn/optim.py", "charrnn/corpus.py", "charrnn/train.py"
SAMPLE, POETRY, CKPT = "charrnn/sample.py", "charrnn/poetry.py", "charrnn/checkpoint.py"
EVAL, ADAPT, CONS = "charrnn/evaluate.py", "charrnn/adaptive.py", "charrnn/constraints.py"
ATOMIC, ENCODED, READING = "charrnn/atomic.py", "charrnn/encoded.py", "charrnn/reading.py"
STEP, CATEG = "charrnn/stepper.py", "charrnn/categorical.py"
HEAP, CLI = "charrnn/heap.py", "charrnn/cli.py"

MUTANTS = [
    # -- the five named in the issue ---------------------------------------------------------
    m("M01", MODEL, "_, top, new_state, _, _ = self._forward(x, state, None)",
      "_, top, new_state, _, _ = self._forward(x, state, self.dropout_keep(np.random.default_rng(0), B, T))",
      "dropout applied inside nll (evaluation)", "tests/test_model.py"),
    m("M02", MODEL, "masks = [k.astype(self.dtype) / keep_prob for k in keep]",
             "masks = [k.astype(self.dtype) for k in keep]",
             "dropout without the 1/(1-p) scaling of kept units", "tests/test_model.py", "tests/test_gradients.py"),
    m("M03", SAMPLE, "kept = (before < top_p * total).sum(axis=1)", "kept = (before <= top_p * total).sum(axis=1)",
      "top-p boundary: < becomes <=", "tests/test_sample.py"),
    m("M04", EVAL, "count += int(mask.sum())", "count += mask.size",
      "evaluate() counts padded positions in its denominator", "tests/test_model.py", "tests/test_cli.py"),
    m("M05", FUNC, "        z -= top\n        target_logit", "        target_logit",
      "no max-subtraction in the fused softmax cross-entropy", "tests/test_functional.py", "tests/test_model.py"),
    # -- model ----------------------------------------------------------------------------------
    m("M06", MODEL, "return rng.random(shape, dtype=np.float32) < 1.0 - self.dropout",
      "return rng.random(shape, dtype=np.float32) < self.dropout",
      "dropout keeps a fraction p of the units instead of 1 - p", "tests/test_model.py"),
    m("M07", MODEL, "        if head_mask is not None:\n            dtop *= head_mask\n", "",
      "the head's dropout mask left out of the backward pass", "tests/test_gradients.py"),
    m("M08", MODEL, "        logits += self.params[\"head.b\"]\n", "",
      "step() forgets the head's bias", "tests/test_model.py", "tests/test_sample.py"),
    m("M09", MODEL, "            if mask is not None:\n                dx *= mask\n", "",
      "the between-layer dropout mask left out of the backward pass", "tests/test_gradients.py"),
    # -- evaluate -------------------------------------------------------------------------------
    m("M10", EVAL, "total += float(nll[mask].sum())", "total += float(nll.sum())",
      "evaluate() adds the loss of padded positions", "tests/test_model.py"),
    m("M11", EVAL, "nll, state = model.nll(x, y, state)", "nll, _ = model.nll(x, y, state)",
      "evaluate() restarts every window from a zero state", "tests/test_model.py"),
    # -- functional -----------------------------------------------------------------------------
    m("M12", FUNC, "z[r, t] -= grad_scale", "z[r, t] += grad_scale",
      "softmax gradient: + instead of - at the target", "tests/test_gradients.py"),
    m("M13", FUNC, "t = targets[start : start + step]", "t = targets[: len(z)]",
      "every block of rows scored against the first block's targets", "tests/test_functional.py",
      "tests/test_model.py", "tests/test_gradients.py"),
    m("M14", FUNC, "for start, count in zip(starts[counts > 1].tolist(), counts[counts > 1].tolist()):",
      "for start, count in zip(starts[counts > 2].tolist(), counts[counts > 2].tolist()):",
      "scatter-add drops the ids that occur exactly twice", "tests/test_gradients.py", "tests/test_cells.py"),
    # -- cells ----------------------------------------------------------------------------------
    m("M15", LSTM, "p[\"b\"][H : 2 * H] = 1.0", "p[\"b\"][H : 2 * H] = 0.0",
      "LSTM forget-gate bias starts at 0 instead of 1", "tests/test_cells.py", "tests/test_model.py"),
    m("M16", LSTM, "        np.multiply(peep[1], c, out=tmp)", "        np.multiply(peep[1], c_prev, out=tmp)",
      "output peephole reads the previous cell instead of the new one", "tests/test_cells.py",
      "tests/test_gradients.py"),
    m("M17", CELL, "        np.add(np.take(Wx, x.reshape(-1), axis=0), b, out=out)\n",
      "        np.add(np.take(Wx, x.reshape(-1), axis=0), 0, out=out)\n",
      "large-vocabulary input projection forgets the bias", "tests/test_cells.py", "tests/test_gradients.py",
      "tests/test_model.py"),
    m("M18", LSTM, "        a += p[\"b\"]\n        a *= self.k.astype(a.dtype)", "        a *= self.k.astype(a.dtype)",
      "LSTM step() forgets the bias", "tests/test_cells.py", "tests/test_model.py"),
    m("M19", RNN, "            np.maximum(a, 0, out=a)", "            np.maximum(a, 0.01 * a, out=a)",
      "ReLU RNN becomes leaky (forward only)", "tests/test_cells.py", "tests/test_gradients.py"),
    m("M20", GRU, "        rec *= k  # exact", "        rec *= -k  # exact",
      "GRU step() with the recurrent term's sign flipped", "tests/test_cells.py", "tests/test_model.py"),
    m("M21", RNN, "            if t > 0:\n                dh_total[t - 1] += rec", "            if t > 1:\n                dh_total[t - 1] += rec",
      "RNN backward stops one step early through time", "tests/test_gradients.py", "tests/test_cells.py"),
    m("M22", GRU, "        bias_x[: 2 * H] += p[\"bh\"][: 2 * H]", "        bias_x[: H] += p[\"bh\"][: H]",
      "GRU forgets the recurrent bias of the update gate", "tests/test_cells.py", "tests/test_gradients.py"),
    # -- optim ----------------------------------------------------------------------------------
    m("M23", OPTIM, "        bias2 = 1.0 - self.beta2**t", "        bias2 = 1.0 - self.beta2 ** (t + 1)",
      "Adam's second-moment bias correction one step ahead", "tests/test_optim.py"),
    m("M24", OPTIM, "        tmp *= sq_scale\n    tmp += eps", "        tmp *= sq_scale\n    tmp -= eps",
      "eps subtracted from the denominator", "tests/test_optim.py"),
    m("M25", OPTIM, "    if math.isfinite(norm) and norm > max_norm:", "    if math.isfinite(norm) and norm > 2 * max_norm:",
      "norm clipping only above twice the threshold", "tests/test_optim.py"),
    m("M26", OPTIM, "        return base_lr * (step + 1) / warmup_steps", "        return base_lr * step / warmup_steps",
      "warm-up starts at 0 (off by one)", "tests/test_optim.py"),
    m("M27", OPTIM, "    progress = min(s / (total_steps - warmup_steps), 1.0)", "    progress = min(s / total_steps, 1.0)",
      "cosine horizon counts the warm-up twice", "tests/test_optim.py"),
    m("M28", OPTIM, "        self.step_count = int(step)", "        self.step_count = int(step) + 1",
      "optimizer step count off by one after loading", "tests/test_optim.py", "tests/test_checkpoint.py"),
    m("M29", OPTIM, "\n            v *= self.momentum", "",
      "SGD momentum never decays the velocity", "tests/test_optim.py"),
    # -- corpus batching ------------------------------------------------------------------------
    m("M30", CORPUS, "        self._y = ids[1 : B * rows + 1].reshape(B, rows)", "        self._y = ids[0 : B * rows].reshape(B, rows)",
      "targets are the inputs themselves", "tests/test_corpus.py", "tests/test_model.py"),
    m("M31", CORPUS, "    cut = len(ids) - n_val\n", "    cut = len(ids) - n_val + 1\n",
      "train and validation split overlap by one character", "tests/test_corpus.py"),
    m("M32", CORPUS, "        cols = slice(k * self.seq_len, (k + 1) * self.seq_len)", "        cols = slice(k * self.seq_len + 1, (k + 1) * self.seq_len + 1)",
      "windows shifted by one column", "tests/test_corpus.py"),
    m("M33", CORPUS, "        y = ids[pos + 1].astype(np.int64)", "        y = ids[pos].astype(np.int64)",
      "validation targets are the inputs", "tests/test_corpus.py", "tests/test_model.py"),
    # -- train: state handling and bookkeeping ---------------------------------------------------
    m("M34", TRAIN, "        run.state = new_state\n", "",
      "the hidden state is not carried from window to window", "tests/test_training_loop.py", "tests/test_bad_input.py", "tests/test_no_run_lost.py",
      "tests/test_signals.py", "tests/test_cli.py", "tests/test_parallel.py"),
    m("M35", TRAIN, "        if p.cursor == 0:\n            run.state = run.model.init_state(t.batch_size)",
      "        if p.cursor == -1:\n            run.state = run.model.init_state(t.batch_size)",
      "a new epoch does not start from a zero state", "tests/test_training_loop.py", "tests/test_bad_input.py", "tests/test_no_run_lost.py", "tests/test_signals.py",
      "tests/test_cli.py", "tests/test_parallel.py"),
    m("M36", TRAIN, "        improved = run.last_val < p.best_val", "        improved = run.last_val <= p.best_val + 1e-3",
      "best.npz replaced by an evaluation that is not better", "tests/test_training_loop.py", "tests/test_bad_input.py", "tests/test_no_run_lost.py", "tests/test_cli.py",
      "tests/test_checkpoint.py"),
    m("M37", TRAIN, "        p.rollbacks, p.lr_scale, p.elapsed = kept", "        p.rollbacks, p.lr_scale, _ = kept",
      "a rollback also rolls back the elapsed time", "tests/test_training_loop.py", "tests/test_bad_input.py", "tests/test_no_run_lost.py"),
    m("M38", TRAIN, "        lr = p.lr_scale * learning_rate(", "        lr = learning_rate(",
      "the rollback's learning-rate cut is ignored", "tests/test_training_loop.py", "tests/test_bad_input.py", "tests/test_no_run_lost.py"),
    m("M39", TRAIN, "        if p.cursor == self.stream.windows_per_epoch:\n            p.cursor, p.epoch = 0, p.epoch + 1",
      "        if p.cursor == self.stream.windows_per_epoch:\n            p.cursor, p.epoch = 0, p.epoch",
      "the epoch counter never advances", "tests/test_training_loop.py", "tests/test_bad_input.py", "tests/test_no_run_lost.py", "tests/test_cli.py"),
    # -- sample ---------------------------------------------------------------------------------
    m("M40", SAMPLE, "        z[z < kth] = -np.inf", "        z[z <= kth] = -np.inf",
      "top-k drops the k-th logit and its ties", "tests/test_sample.py"),
    m("M41", SAMPLE, "    if temperature != 1:\n        with np.errstate(over=\"ignore\"):\n            z /= temperature",
      "    if temperature != 1:\n        with np.errstate(over=\"ignore\"):\n            z *= temperature",
      "temperature multiplies instead of divides", "tests/test_sample.py"),
    # -- poetry's masks -------------------------------------------------------------------------
    m("M42", POETRY, "                    penalised[all_rows, prev] = False", "                    pass",
      "the repeat penalty also hits the character just written (叠字)", "tests/test_poetry.py",
      "tests/test_poem_cli.py"),
    m("M43", CONS, "            fallbacks += [rhyming, rhyming & ~self.used]", "            fallbacks += [rhyming]",
      "a rhyme character may be used twice", "tests/test_poetry.py", "tests/test_prosody.py"),
    m("M44", POETRY, "            if column < spec.chars:\n                limits.update(line, column, prev)",
      "            if column < spec.chars - 1:\n                limits.update(line, column, prev)",
      "the last character of a line does not narrow the patterns", "tests/test_poetry.py", "tests/test_prosody.py"),
    # -- checkpoint -----------------------------------------------------------------------------
    m("M45", CKPT, "FORMAT_VERSION = 2", "FORMAT_VERSION = 3",
      "checkpoints written with a format number no reader accepts", "tests/test_checkpoint.py"),
    m("M46", ADAPT, "self.rank[self.order] = np.arange(vocab_size)", "self.rank[:] = np.arange(vocab_size)",
      "the adaptive head ignores its frequency order", "tests/test_adaptive.py"),
    # -- reading and the encoded-corpus cache --------------------------------------------------
    m("M51", ENCODED, 'h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "encoding": codec, "max_vocab": max_vocab,',
      'h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "encoding": codec, "max_vocab": None,',
      "the cache key ignores data.max_vocab", "tests/test_encoded.py"),
    m("M52", ENCODED, "            if verify and _checksum(ids, part, progress) != want[\"crc32\"]:",
      "            if False:", "cached ids used without checking their CRC", "tests/test_encoded.py"),
    m("M53", READING, "        joined = bool(held)\n", "        joined = False\n",
      "a CRLF split between two chunks stays CR LF", "tests/test_encoded.py", "tests/test_corpus.py"),
    m("M54", ATOMIC, "        _remove_quietly(temporary)\n        if isinstance(exc, OSError):",
      "        if isinstance(exc, OSError):", "a failed write leaves its temporary file behind",
      "tests/test_checkpoint.py", "tests/test_bad_input.py", "tests/test_no_run_lost.py"),
    # -- the lean one-stream path ----------------------------------------------------------------
    m("M55", STEP, "            add(c, g, out=c)                                      # c' = f c + i g",
      "            subtract(c, g, out=c)                                 # c' = f c + i g",
      "the lean LSTM subtracts i g from the cell", "tests/test_stepper.py"),
    m("M56", STEP, "        while c.item(i) / total <= u:", "        while c.item(i) / total < u:",
      "the lean draw stops at an id whose cumulative probability equals u", "tests/test_stepper.py"),
    m("M58", STEP, "        while i > 0 and c.item(i - 1) / total > u:", "        while False:",
      "the lean draw trusts the binary search on u * C", "tests/test_stepper.py"),
    m("M57", SAMPLE, "    stream = one_stream(model, num_samples)\n", "    stream = None\n",
      "generate never takes the lean path", "tests/test_stepper.py"),
    m("M63", STEP, "            np.copyto(x_part, x[0])\n", "",
      "a stacked layer never sees the layer below's h", "tests/test_stepper.py"),
    m("M64", STEP, "np.hstack([Wh_k[:, : 2 * H], zeros_h, Wh_k[:, 2 * H :]])",
      "np.hstack([Wh_k[:, : 2 * H], Wh_k[:, 2 * H :], zeros_h])",
      "a stacked GRU adds h Wh_n to the x side of n, outside r *", "tests/test_stepper.py"),
    m("M65", STEP, "    return threads > 1 and max(separate) < _SPLIT_FROM <= stacked", "    return False",
      "no layer is ever stacked", "tests/test_stepper.py"),
    m("M66", STEP, "                add(x_side, bx_k, out=x_side)\n", "",
      "a stacked GRU drops its x-side bias", "tests/test_stepper.py"),
    m("M67", STEP, "    return threads > 1 and max(separate)", "    return threads > 0 and max(separate)",
      "layers are stacked with one BLAS thread", "tests/test_stepper.py"),
    # -- equivalent or unobservable: listed with the reason, not run ---------------------------
    m("M47", CELL, "    if is_ids(x) and Wx.shape[0] <= T * B:", "    if is_ids(x) and Wx.shape[0] < T * B:",
      "input projection switches to gather-then-scale one row later", equivalent=(
          "both branches compute the same (x Wx + b) k, exactly: only their cost differs")),
    m("M48", FUNC, "_BLOCK_ELEMENTS = 1 << 18", "_BLOCK_ELEMENTS = 1 << 12",
      "softmax blocks of 4,096 elements instead of 262,144", equivalent=(
          "each row is computed alone, so the block size changes speed, never a value")),
    m("M49", OPTIM, "_BLOCK = 1 << 16", "_BLOCK = 1 << 10",
      "optimizer updates in blocks of 1,024 elements", equivalent=(
          "the update is elementwise: any blocking gives the same bits")),
    m("M50", ATOMIC, "            os.fsync(fh.fileno())", "            pass",
      "checkpoint data not flushed to disk before the rename", equivalent=(
          "unobservable without cutting the power: the page cache serves every read the same")),
    m("M59", CATEG, "    margin = _margin(V)\n", "    margin = 0.0\n",
      "the block draw trusts its own sums at a boundary", "tests/test_categorical.py"),
    m("M60", CATEG, "ends[rows, block - 1], 0.0)", "ends[rows, block], 0.0)",
      "the block draw starts the running sum one block late", "tests/test_categorical.py"),
    m("M61", HEAP, " and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1", "",
      "freed memory is still trimmed after every character", "tests/test_heap.py"),
    m("M62", CLI, "    heap.keep_freed_memory()\n", "",
      "the charrnn command leaves glibc's thresholds as they are", "tests/test_heap.py"),
]


def _copy_tree(target: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, target / name)


def _run_tests(work: Path, tests: tuple[str, ...]) -> tuple[bool, str]:
    """(passed, the first failing test's node id or the tail of the output)."""
    env = {**os.environ, "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider",
                             *tests], cwd=work, env=env, capture_output=True, text=True)
    if result.returncode == 0:
        return True, ""
    failed = re.search(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)
    if failed:
        return False, failed.group(1)
    tail = (result.stdout.strip() or result.stderr.strip() or f"exit status {result.returncode}")
    return False, tail.splitlines()[-1]


def _line_of(text: str, old: str) -> int:
    return text[: text.index(old)].count("\n") + 1 + (1 if old.startswith("\n") else 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="*", help="mutant ids to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    chosen = [mu for mu in MUTANTS if not args.ids or mu.id in args.ids]
    if args.list:
        for mu in chosen:
            print(f"{mu.id}  {mu.path:24s} {mu.what}")
        return 0
    with tempfile.TemporaryDirectory(prefix="charrnn-mutants-") as scratch:
        work = Path(scratch)
        _copy_tree(work)
        found = subprocess.run([sys.executable, "-c", "import charrnn; print(charrnn.__file__)"],
                               cwd=work, env={**os.environ, "PYTHONPATH": str(work)},
                               capture_output=True, text=True).stdout.strip()
        if not found.startswith(str(work)):
            sys.exit(f"the scratch copy is not what Python imports ({found}); is charrnn installed non-editable?")
        for mu in chosen:  # every edit must apply to exactly one place and leave valid Python
            text = (work / mu.path).read_text(encoding="utf-8")
            if text.count(mu.old) != 1:
                sys.exit(f"{mu.id}: its text occurs {text.count(mu.old)} times in {mu.path}")
            try:
                compile(text.replace(mu.old, mu.new), mu.path, "exec")
            except SyntaxError as exc:
                sys.exit(f"{mu.id}: the edit does not compile ({exc.msg}, line {exc.lineno})")
        for selection in sorted({mu.tests for mu in chosen if not mu.equivalent}):
            ok, why = _run_tests(work, selection)
            if not ok:
                sys.exit(f"the unmutated code fails {' '.join(selection)}: {why}")
        print("| mutant | file:line | change | result |")
        print("|---|---|---|---|")
        survivors = 0
        for mu in chosen:
            target = work / mu.path
            original = target.read_text(encoding="utf-8")
            where = f"{mu.path}:{_line_of(original, mu.old)}"
            if mu.equivalent:
                print(f"| {mu.id} | {where} | {mu.what} | equivalent: {mu.equivalent} |", flush=True)
                continue
            target.write_text(original.replace(mu.old, mu.new), encoding="utf-8")
            try:
                passed, killer = _run_tests(work, mu.tests)
            finally:
                target.write_text(original, encoding="utf-8")
            survivors += passed
            result = "SURVIVED" if passed else f"killed by `{killer}`"
            print(f"| {mu.id} | {where} | {mu.what} | {result} |", flush=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
