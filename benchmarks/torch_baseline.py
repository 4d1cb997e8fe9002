"""PyTorch's CPU LSTM (or GRU) trained with a charrnn config's recipe for the same wall-clock budget.

The yardstick for the quality configs. From the config it takes the cell (or --cell), layers,
hidden size, dropout (between layers and before the head), batch size, window length, Adam
(learning rate, betas, eps, weight decay), warm-up and schedule (charrnn's own learning_rate
function), global-norm clip, seed and budget (train.max_time). Like charrnn it uses one-hot
input, carries the state across windows and resets it at each epoch, splits off the same
validation tail and scores every validation character once with the state carried. Time spent
on evaluation is not counted, as in charrnn.

Initialisation is part of the recipe: `--init charrnn` (the default) starts PyTorch from the very
weights charrnn draws for the config and seed (one-hot rows from U(-1, 1), forget bias 1, the
head's bias at the log unigram frequencies); `--init torch` keeps PyTorch's own U(+-1/sqrt(H)).
nn.LSTM keeps its two bias vectors, both trained: charrnn's single bias starts in bias_ih and
bias_hh starts at zero. `--lstm-bias one` keeps bias_hh at zero, untrained, so that PyTorch's
LSTM has exactly charrnn's parameters (Adam moves each of two summed biases about as far as a
single one, so two move the gates' bias about twice as fast).

PyTorch is faster or slower per step than charrnn, so a cosine horizon of the config's
max_steps would end its schedule at the wrong moment. `--max-steps auto` (the default) times
steps 6-35 (still in warm-up, where the horizon does not matter yet) and lays the schedule over
the steps the budget allows at their mean speed, as charrnn's `train.max_steps: auto` does; `--max-steps config` keeps the
config's horizon. Writes RUN_DIR/metrics.jsonl in charrnn's format, so
`charrnn plot runs/shakespeare-10min runs/torch-10min` overlays the runs.

    pip install 'charrnn[bench]'        # torch==2.13.0, CPU build
    python benchmarks/torch_baseline.py --config configs/shakespeare-10min.yaml --out runs/torch-10min
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from charrnn.config import HORIZON_PILOT, load_config
from charrnn.corpus import BatchStream, Vocab, eval_batches, split
from charrnn.reading import read_text
from charrnn.errors import CharRNNError
from charrnn.optim import learning_rate
from charrnn.start import initial_model



def _max_steps(text: str) -> str | int:
    """--max-steps: "auto", "config" or a positive number of steps."""
    if text in ("auto", "config"):
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected auto, config or a positive integer, got {text!r}")


def _load_charrnn_init(net, cfg, train_ids: np.ndarray, V: int, cell: str) -> None:
    """Overwrite net's weights with those charrnn's trainer draws for cfg (same seed, same values).

    charrnn keeps weights as (inputs, outputs) and PyTorch as (outputs, inputs); both pack the gates
    in the same order (LSTM i, f, g, o; GRU r, z, n). The LSTM's single bias goes to bias_ih.
    """
    import torch

    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, cell=cell))
    model, _ = initial_model(cfg, train_ids, V)
    params = model.params
    with torch.no_grad():
        for layer in range(model.num_layers):
            p = {k.split(".", 2)[2]: v for k, v in params.items() if k.startswith(f"layers.{layer}.")}
            getattr(net.rnn, f"weight_ih_l{layer}").copy_(torch.from_numpy(p["Wx"].T.copy()))
            getattr(net.rnn, f"weight_hh_l{layer}").copy_(torch.from_numpy(p["Wh"].T.copy()))
            bias_ih, bias_hh = getattr(net.rnn, f"bias_ih_l{layer}"), getattr(net.rnn, f"bias_hh_l{layer}")
            if cell == "lstm":
                bias_ih.copy_(torch.from_numpy(p["b"]))
                bias_hh.zero_()
            else:
                bias_ih.copy_(torch.from_numpy(p["bx"]))
                bias_hh.copy_(torch.from_numpy(p["bh"]))
        net.head.weight.copy_(torch.from_numpy(params["head.W"].T.copy()))
        net.head.bias.copy_(torch.from_numpy(params["head.b"]))


class _Parser(argparse.ArgumentParser):
    """Bad input is reported in one line, as charrnn's own commands do, without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main() -> None:
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="charrnn YAML config whose recipe to follow")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, as for charrnn train (repeatable)")
    parser.add_argument("--out", required=True, help="run directory for metrics.jsonl")
    parser.add_argument("--max-steps", type=_max_steps, default="auto",
                        help="cosine horizon and step limit: auto | config | a number (default auto)")
    parser.add_argument("--cell", choices=("lstm", "gru"), default=None,
                        help="PyTorch's cell (default: the config's); the rest of the recipe is kept")
    parser.add_argument("--init", choices=("charrnn", "torch"), default="charrnn",
                        help="start from charrnn's initial weights for the config and seed (default) "
                             "or from PyTorch's default initialisation")
    parser.add_argument("--lstm-bias", choices=("two", "one"), default="two",
                        help="nn.LSTM's two trained bias vectors (default), or one as in charrnn "
                             "(bias_hh held at zero)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    try:
        cfg = load_config(args.config, tuple(args.overrides))
    except CharRNNError as exc:
        parser.error(str(exc))
    m, t = cfg.model, cfg.train
    cell = args.cell or m.cell
    if (cfg.data.val_path is not None or m.embedding_size or m.peephole or t.optimizer != "adam"
            or t.clip_mode != "norm" or cell == "rnn" or m.head != "full"):
        parser.error("this baseline follows one-hot, Adam, norm-clipped LSTM/GRU configs with the "
                     "full softmax head, without peepholes and with a val_fraction split")
    if t.max_time is None:
        parser.error("the config needs train.max_time: it is the budget")
    if args.max_steps == "auto" and t.warmup_steps < HORIZON_PILOT[-1]:
        parser.error(f"--max-steps auto times steps {HORIZON_PILOT[0]}-{HORIZON_PILOT[-1]}, which must still be in "
                     f"warm-up: it needs train.warmup_steps >= {HORIZON_PILOT[-1]} (or --max-steps N)")
    if args.lstm_bias == "one" and cell != "lstm":
        parser.error("--lstm-bias one: the cell is a GRU, whose two biases are not redundant")
    if args.max_steps == "config" and t.max_steps in (None, "auto"):
        parser.error("--max-steps config: the config gives no number of steps (use --max-steps auto)")
    try:
        import torch
    except ImportError:
        parser.error("PyTorch is not installed: pip install 'charrnn[bench]'")

    torch.manual_seed(t.seed)
    torch.set_num_threads(args.threads)
    text = read_text(cfg.data.path)
    vocab = Vocab.build(text)
    train_ids, val_ids = split(vocab.encode(text), cfg.data.val_fraction)
    stream = BatchStream(train_ids, t.batch_size, t.seq_len)
    V, H, L, B = len(vocab), m.hidden_size, m.num_layers, t.batch_size
    recurrent = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = recurrent(V, H, L, dropout=m.dropout if L > 1 else 0.0)
            self.drop = torch.nn.Dropout(m.dropout)
            self.head = torch.nn.Linear(H, V)

        def forward(self, ids, state):  # ids (T, B) -> logits (T*B, V)
            x = torch.nn.functional.one_hot(ids, V).float()
            out, state = self.rnn(x, state)
            return self.head(self.drop(out)).reshape(-1, V), state

    def zeros(b: int):
        h = torch.zeros(L, b, H)
        return (h, torch.zeros(L, b, H)) if cell == "lstm" else h

    def detach(state):
        return tuple(s.detach() for s in state) if cell == "lstm" else state.detach()

    net = Net()
    if args.init == "charrnn":
        _load_charrnn_init(net, cfg, train_ids, V, cell)
    if args.lstm_bias == "one":
        for layer in range(L):
            bias_hh = getattr(net.rnn, f"bias_hh_l{layer}")
            with torch.no_grad():
                bias_hh.zero_()
            bias_hh.requires_grad_(False)  # no gradient: AdamW and the clip leave it alone
    # AdamW with weight_decay 0 is Adam; charrnn's Adam decays weights the decoupled way too.
    optimizer = torch.optim.AdamW(net.parameters(), lr=t.learning_rate, betas=(t.beta1, t.beta2),
                                  eps=t.eps, weight_decay=t.weight_decay)

    def evaluate() -> float:
        net.eval()
        total, count, state = 0.0, 0, zeros(B)
        with torch.no_grad():
            for x, y, mask in eval_batches(val_ids, B, t.seq_len):
                logits, state = net(torch.from_numpy(x.T.copy()), state)
                nll = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y.T.reshape(-1).copy()),
                                                        reduction="none")
                keep = torch.from_numpy(mask.T.reshape(-1).copy())
                total += float(nll[keep].sum())
                count += int(keep.sum())
        net.train()
        return total / count

    horizon = {"auto": None, "config": t.max_steps}.get(args.max_steps, args.max_steps)
    if horizon is not None:
        try:  # a horizon the schedule cannot use is refused before anything is written
            learning_rate(0, t.learning_rate, t.schedule, t.warmup_steps, horizon, t.decay_rate,
                          t.decay_every, t.min_lr)
        except CharRNNError as exc:
            parser.error(f"--max-steps {args.max_steps}: {exc}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "metrics.jsonl", "w", encoding="utf-8")
    budget, elapsed, step, cursor, epoch, best = t.max_time, 0.0, 0, 0, 0, math.inf
    state, losses, step_times = zeros(B), [], []
    while elapsed < budget and (horizon is None or step < horizon):
        began = time.perf_counter()
        if cursor == 0:
            state = zeros(B)
        x, y = stream.window(cursor)
        state = detach(state)
        # Until the horizon is known the schedule is still warming up, which ignores total_steps.
        lr = learning_rate(step, t.learning_rate, t.schedule, t.warmup_steps,
                           horizon or t.warmup_steps + 1, t.decay_rate, t.decay_every, t.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits, state = net(torch.from_numpy(x.T.copy()), state)
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y.T.reshape(-1).copy()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip)
        optimizer.step()
        spent = time.perf_counter() - began
        elapsed += spent
        step, cursor = step + 1, cursor + 1
        step_times.append(spent)
        if horizon is None and step == HORIZON_PILOT[-1]:
            # charrnn's rule (train.max_steps auto): the mean time of steps 6-35 sets the horizon.
            # At least past warm-up; a budget too short for that simply ends the run first.
            per_step = sum(step_times[HORIZON_PILOT[0] - 1:]) / len(HORIZON_PILOT)
            horizon = max(step + int((budget - elapsed) / per_step), t.warmup_steps + 1)
            print(f"cosine horizon: {horizon} steps", flush=True)
        if cursor == stream.windows_per_epoch:
            cursor, epoch = 0, epoch + 1
        losses.append(loss.item())
        if step % t.log_every == 0:
            log.write(json.dumps({"event": "train", "step": step, "epoch": epoch,
                                  "loss": float(np.mean(losses)), "bpc": float(np.mean(losses)) / math.log(2),
                                  "lr": lr, "elapsed": round(elapsed, 3)}) + "\n")
            losses = []
        done = elapsed >= budget or (horizon is not None and step >= horizon)
        if step % t.eval_every == 0 or done:
            val = evaluate()
            best = min(best, val)
            log.write(json.dumps({"event": "eval", "step": step, "epoch": epoch, "val_loss": val,
                                  "val_bpc": val / math.log(2), "elapsed": round(elapsed, 3)}) + "\n")
            log.flush()
            print(f"step {step} epoch {epoch} {elapsed / 60:.1f} min: val loss {val:.4f}", flush=True)
    log.close()
    print(json.dumps({"torch": torch.__version__, "threads": args.threads, "config": args.config,
                      "cell": cell, "init": args.init, "lstm_bias": args.lstm_bias, "dropout": m.dropout,
                      "steps": step, "horizon": horizon,
                      "train_minutes": round(elapsed / 60, 2), "final_val_loss": round(val, 4),
                      "best_val_loss": round(best, 4)}))


if __name__ == "__main__":
    main()
