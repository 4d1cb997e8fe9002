"""The `charrnn` command line: the only module that imports click or reads argv.

Each command turns its flags into plain arguments and calls the library; cli_errors.py turns
every expected failure into one line on stderr and an exit status.
"""

from __future__ import annotations

import math
import sys

import click
import numpy as np

from . import heap, interrupts, names
from .cli_errors import Cli, interrupted, silence_stdout
from .errors import CharRNNError
from .sample import MAX_LENGTH, MAX_SAMPLES

_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 100}


@click.group(cls=Cli, context_settings=_SETTINGS, no_args_is_help=False)
@click.version_option(package_name="charrnn", message="charrnn %(version)s")
def cli():
    """Character-level LSTM / GRU / RNN language models in pure NumPy: train, sample, evaluate."""


# -- train --------------------------------------------------------------------------------------


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config of the run (see configs/); not needed with --resume.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set train.learning_rate=1e-3 (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Run directory [default: OUT_DIR/NAME from the config, or the --resume checkpoint's directory].")
@click.option("--resume", type=click.Path(dir_okay=False),
              help="Continue the run saved in this checkpoint exactly (optimizer, data position, state, RNG).")
@click.option("--init-from", type=click.Path(dir_okay=False),
              help="Start a new run from the weights of this checkpoint (same vocabulary and model).")
@click.option("--overwrite", is_flag=True, help="Replace a run already in the run directory.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar [default: when stderr is a terminal].")
def train(config_path, overrides, out_dir, resume, init_from, overwrite, progress):
    """Train a model; writes config.yaml, metrics.jsonl, last.npz, best.npz and samples.txt."""
    from .config import load_config
    from .train import resume as resume_training, train as run_training

    if resume and init_from:
        raise click.UsageError("--resume and --init-from exclude each other: --resume continues a run, "
                               "--init-from starts a new one from its weights")
    if resume and config_path:
        raise click.UsageError("--resume takes the config stored in the checkpoint; "
                               "change keys with --set instead of --config")
    if not config_path and not resume:
        raise click.UsageError("--config FILE is required (or --resume CHECKPOINT)")
    show = sys.stderr.isatty() if progress is None else progress
    common = dict(out_dir=out_dir, overwrite=overwrite, show_progress=show,
                  say=lambda msg: click.echo(msg, err=True))
    if resume:
        outcome = resume_training(resume, overrides=overrides, **common)
    else:
        outcome = run_training(load_config(config_path, overrides), init_from=init_from, **common)
    if outcome.signal is not None:
        return 128 + outcome.signal
    click.echo(f"best val loss {outcome.progress.best_val:.4f} nats "
               f"({outcome.progress.best_val / math.log(2):.3f} bits/char); "
               f"checkpoints in {outcome.run_dir}", err=True)
    return 0


# -- sample -------------------------------------------------------------------------------------


def _sampling_options(func):
    func = click.option("--top-p", type=float, default=None,
                        help="Nucleus sampling: keep the most probable characters up to this mass, in (0, 1].")(func)
    func = click.option("--top-k", type=int, default=None,
                        help="Keep only the K most probable characters.")(func)
    func = click.option("--temperature", "-t", type=float, default=0.8,
                        help="Softmax temperature; 0 = greedy, <1 safer, >1 wilder.")(func)
    func = click.option("--seed", type=click.IntRange(min=0), default=None,
                        help="Random seed; the same seed gives the same text [default: random].")(func)
    return func


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@_sampling_options
@click.option("--prime", default="", help="Text to start from; it begins the output.")
@click.option("--length", "-n", type=click.IntRange(0, MAX_LENGTH), default=500,
              help="Characters to generate after the prime.")
@click.option("--num-samples", type=click.IntRange(1, MAX_SAMPLES), default=1,
              help="Samples to generate together (one batch).")
@click.option("--stop", default=None, help="End a sample right after this string appears.")
@click.option("--on-unknown", type=click.Choice(["error", "drop", "unk"]), default="error",
              help="Prime characters missing from the vocabulary: fail, drop them, or read them as <unk>.")
def sample(checkpoint, seed, temperature, top_k, top_p, prime, length, num_samples, stop, on_unknown):
    """Generate text from a checkpoint, streamed to stdout."""
    from .checkpoint import load_model
    from .sample import generate

    model, vocab, _, _ = load_model(checkpoint)
    chunks = generate(model, vocab, np.random.default_rng(seed), prime=prime, length=length,
                      num_samples=num_samples, temperature=temperature, top_k=top_k, top_p=top_p,
                      stop=stop, on_unknown=on_unknown)
    try:
        for chunk in chunks:
            sys.stdout.write(chunk)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (e.g. `head`) has all it wanted: that is a normal end, not an error.
        silence_stdout()


# -- eval ---------------------------------------------------------------------------------------


@cli.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--val", "use_val", is_flag=True,
              help="Evaluate the validation split of the checkpoint's own training data.")
@click.option("--batch-size", type=click.IntRange(1, 1_000_000), default=None,
              help="Parallel rows [default: the checkpoint's train.batch_size, as the trainer used].")
@click.option("--seq-len", type=click.IntRange(1, 1_000_000), default=None, help="Window length [default: the checkpoint's train.seq_len].")
@click.option("--encoding", default="utf-8", help="Text encoding of FILES.")
def eval_(checkpoint, files, use_val, batch_size, seq_len, encoding):
    """Loss (nats), bits per character and perplexity of a checkpoint on text files."""
    from .checkpoint import load_model
    from .encoded import encode_file
    from .evaluate import bits_per_char, checkpoint_windows, evaluate, validation_split

    if not files and not use_val:
        raise click.UsageError("give text FILES to evaluate, or --val")
    model, vocab, meta, _ = load_model(checkpoint)
    B, T = checkpoint_windows(checkpoint, meta, batch_size, seq_len)
    if use_val and not isinstance(meta.get("config"), dict):
        raise CharRNNError(f"{checkpoint}: holds no training config, so it has no validation "
                           "split; evaluate text FILES instead of --val")

    def report(name: str, ids: np.ndarray, excluded: int):
        if len(ids) < 2:
            raise CharRNNError(f"{name}: fewer than 2 characters left to score")
        windows = -(-(-(-(len(ids) - 1) // B)) // T)  # ceil(ceil((N - 1) / B) / T)
        if windows >= 1000 and sys.stderr.isatty():
            with click.progressbar(length=windows, label=f"scoring {name}", file=sys.stderr) as bar:
                nats = evaluate(model, ids, B, T, progress=bar.update)
        else:
            nats = evaluate(model, ids, B, T)
        note = f", {excluded:,} outside the vocabulary excluded" if excluded else ""
        click.echo(f"{name}: {len(ids) - 1:,} characters scored{note}: loss {nats:.6f} nats, "
                   f"{bits_per_char(nats):.6f} bits/char, perplexity {math.exp(nats):.3f}")

    if use_val:
        report(*validation_split(checkpoint, meta, vocab, warn=lambda message: click.echo(message, err=True)), 0)
    for name in files:
        ids, excluded = encode_file(name, vocab, encoding)
        report(name, ids, excluded)


# -- info ---------------------------------------------------------------------------------------


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
def info(checkpoint):
    """Architecture, size, training progress and resolved config of a checkpoint."""
    from .checkpoint import describe, load_model
    from .config import config_text

    model, vocab, meta, _ = load_model(checkpoint)
    click.echo(describe(checkpoint, model, vocab, meta))
    if isinstance(meta.get("config"), dict):
        click.echo("config:\n" + "\n".join("  " + line for line in config_text(meta["config"]).splitlines()))


# -- gradcheck ----------------------------------------------------------------------------------


@cli.command()
@click.option("--cell", type=click.Choice(names.CELLS), default="lstm", help="Cell type.")
@click.option("--layers", type=click.IntRange(1, 8), default=2, help="Stacked layers.")
@click.option("--steps", type=click.IntRange(1, 64), default=5, help="Timesteps T of the window.")
@click.option("--batch", type=click.IntRange(1, 16), default=2, help="Batch size B.")
@click.option("--hidden", type=click.IntRange(1, 32), default=3, help="Hidden units H.")
@click.option("--vocab", type=click.IntRange(2, 32), default=5, help="Vocabulary size V.")
@click.option("--embedding", type=click.IntRange(0, 32), default=0, help="Embedding size (0 = one-hot).")
@click.option("--peephole", is_flag=True, help="LSTM with peephole connections.")
@click.option("--relu", is_flag=True, help="Vanilla RNN with ReLU instead of tanh.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              help="Check with dropout (fixed masks).")
@click.option("--adaptive", is_flag=True,
              help="An adaptive softmax head (two clusters) instead of the full one; needs --vocab >= 6.")
@click.option("--threshold", type=float, default=1e-6,
              help="Largest acceptable norm-wise relative error (finite, >= 0).")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Seed of the random problem.")
def gradcheck(cell, layers, steps, batch, hidden, vocab, embedding, peephole, relu, dropout, adaptive,
              threshold, seed):
    """Check every analytic gradient against central differences in float64."""
    from .gradcheck import check_model, random_problem

    if not 0 <= threshold < math.inf:
        raise click.UsageError(f"--threshold must be a finite number >= 0, got {threshold}")
    if peephole and cell != "lstm":
        raise click.UsageError("--peephole applies to --cell lstm only")
    if relu and cell != "rnn":
        raise click.UsageError("--relu applies to --cell rnn only")
    if adaptive and vocab < 6:
        raise click.UsageError(f"--adaptive needs --vocab >= 6 (a shortlist and two clusters), got {vocab}")
    extra = {"peephole": True} if peephole else {"nonlinearity": "relu"} if relu else {}
    model, x, y, state = random_problem(cell, layers, steps, batch, vocab, hidden, embedding, seed,
                                        adaptive=adaptive, dropout=dropout, **extra)
    errors = check_model(model, x, y, state, dropout_seed=seed if dropout else None)
    width = max(map(len, errors))
    for key, err in errors.items():
        click.echo(f"{key:<{width}}  {err:.2e}  {'ok' if err <= threshold else 'FAIL'}")
    worst = max(errors, key=errors.get)
    failed = sum(not err <= threshold for err in errors.values())  # a NaN error fails
    click.echo(f"worst {worst} {errors[worst]:.2e}; {len(errors) - failed} passed, {failed} failed "
               f"(threshold {threshold:g})")
    return 1 if failed else 0


# -- Tang poetry --------------------------------------------------------------------------------


@cli.command("prepare-tang")
@click.argument("raw_dir", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              help="Share of poems held out for validation.")
@click.option("--seed", type=click.IntRange(min=0), default=1, help="Seed of the train/val split.")
@click.option("--tables", "tables_dir", type=click.Path(file_okay=False), default=None,
              help="Also rebuild the rhyme tables pingshui.json and shisan.json in this folder (the package's is charrnn/data).")
def prepare_tang(raw_dir, out_dir, val_fraction, seed, tables_dir):
    """Build the simplified Tang corpus from chinese-poetry JSON (needs the [tang] extra)."""
    from .tang import prepare_tang as prepare

    counts = prepare(raw_dir, out_dir, val_fraction=val_fraction, seed=seed, tables_dir=tables_dir)
    click.echo(f"{counts['poems']:,} poems ({counts['train']:,} train, {counts['val']:,} val) in {out_dir}: "
               + ", ".join(f"{key} {counts[key]:,}" for key in ("wujue", "qijue", "wulv", "qilv")))


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--form", "-f", required=True, metavar="FORM",
              help="wujue (五言绝句), qijue (七言绝句), wulv (五言律诗) or qilv (七言律诗).")
@click.option("--acrostic", default=None,
              help="藏头诗: one character per line (4 for 绝句, 8 for 律诗) that starts each line.")
@click.option("--start", default="", help="Characters that open the first line.")
@click.option("--num", type=click.IntRange(1, MAX_SAMPLES), default=1, help="Poems to write (decoded together).")
@_sampling_options
@click.option("--tones/--no-tones", default=False,
              help="Every line follows a 平仄 tone template of regulated verse (S1-S4; 孤平 and 三平尾 refused).")
@click.option("--template", type=click.Choice(["S1", "S2", "S3", "S4"]), default=None,
              help="With --tones: this template only [default: any the poem still fits].")
@click.option("--rhyme/--no-rhyme", default=False,
              help="The even lines (and the first, when the template rhymes there) end in one rhyme group, no rhyme character twice.")
@click.option("--rhyme-scheme", type=click.Choice(["pingshui", "shisan"]), default="pingshui",
              help="Rhyme by the 平水韵 平声 groups (Tang verse) or the modern 十三辙.")
@click.option("--strict", is_flag=True, help="Short for --tones --rhyme.")
@click.option("--repeat-penalty", type=click.FloatRange(0, 100), default=0.0,
              help="Subtract this from the logit of each character already in the poem (叠字 such as 悠悠 exempt); 0 = off.")
@click.option("--best-of", type=click.IntRange(1, MAX_SAMPLES), default=1,
              help="Decode N candidates per poem and keep the one the model finds likeliest (lowest NLL).")
@click.option("--no-copy", is_flag=True,
              help="Refuse lines found verbatim in the training corpus (the checkpoint's data.path, or --corpus).")
@click.option("--corpus", "corpus_path", type=click.Path(dir_okay=False), default=None,
              help="Poems whose lines --no-copy refuses.")
@click.option("--pretty", is_flag=True, help="Print each couplet on its own line, poems apart; default: one poem per line.")
@click.option("--stats", is_flag=True,
              help="Also print the poems' mean NLL under the model (nats/char) and the time per poem to stderr.")
def poem(checkpoint, form, acrostic, start, num, seed, temperature, top_k, top_p, tones, template,
         rhyme, rhyme_scheme, strict, repeat_penalty, best_of, no_copy, corpus_path, pretty, stats):
    """Write Tang poems in a classical form; the form (and with --tones the template) holds whatever the model."""
    import time

    from .checkpoint import load_model
    from .poetry import compose_scored, corpus_lines, couplets, read_poems

    began = time.perf_counter()
    model, vocab, meta, _ = load_model(checkpoint)
    forbid = None
    if no_copy:
        if corpus_path is None:
            paths = meta.get("config", {}).get("data", {}).get("path")
            corpus_path = paths if isinstance(paths, str) else None
        if corpus_path is None:
            raise click.UsageError("--no-copy needs --corpus FILE (the checkpoint names no single corpus)")
        forbid = corpus_lines(read_poems(corpus_path))
    written = compose_scored(model, vocab, form, np.random.default_rng(seed), num=num,
                             temperature=temperature, top_k=top_k, top_p=top_p, acrostic=acrostic,
                             start=start, tones=tones or strict, template=template,
                             rhyme=rhyme or strict, rhyme_scheme=rhyme_scheme,
                             repeat_penalty=repeat_penalty, best_of=best_of, forbid_corpus_lines=forbid)
    for text in written.poems:
        if pretty:
            click.echo("\n".join(couplets(text)) + "\n")
        else:
            click.echo(text)
    if stats:
        spent = (time.perf_counter() - began) / num
        click.echo(f"{num} poems: mean NLL {written.nll.mean():.3f} nats/char "
                   f"({written.nll.mean() / math.log(2):.3f} bits/char), {spent:.3f} s per poem", err=True)


@cli.command("poem-metrics")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--corpus", "corpus_path", type=click.Path(dir_okay=False), default=None,
              help="Training poems, to measure the share of lines copied from them.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def poem_metrics(file, corpus_path, as_json):
    """Form, tone templates, rhyme (平水韵 and 十三辙), repeats, copied and distinct lines of poems (one per line)."""
    import json

    from .poetry import corpus_lines, read_poems
    from .scansion import metrics_table, poem_metrics as measure

    poems = read_poems(file)
    if not poems:
        raise CharRNNError(f"{file}: no poems in it")
    lines = corpus_lines(read_poems(corpus_path)) if corpus_path else None
    m = measure(poems, lines)
    if as_json:
        click.echo(json.dumps(m, ensure_ascii=False, indent=2))
        return
    click.echo(metrics_table(m))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--output", "-o", default="curves.png", type=click.Path(dir_okay=False),
              help="Image file to write; its suffix picks the format (.png, .svg, .pdf, ...).")
def plot(run_dirs, output):
    """Learning curves of runs, overlaid: loss against steps and wall time (needs the [plot] extra)."""
    from .plot import plot_runs

    plot_runs(list(run_dirs), output)
    click.echo(f"wrote {output}")


def main():
    """The process entry point: stop signals follow charrnn's rule until the process exits, and
    freed memory is kept for reuse (charrnn.heap)."""
    interrupts.install()
    heap.keep_freed_memory()
    try:
        cli(prog_name="charrnn")
        status = 0
    except SystemExit as exc:
        status = exc.code
    except KeyboardInterrupt as exc:  # arrived while another ending was being reported
        interrupts.ending()
        status, message = interrupted(exc)
        print(f"charrnn: error: {message}", file=sys.stderr)
    sys.exit(interrupts.final_status(status))
