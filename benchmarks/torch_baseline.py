"""PyTorch's CPU LSTM trained on tinyshakespeare for a fixed wall-clock budget: the yardstick.

The same recipe as a charrnn config (2 layers, one-hot input, Adam, global-norm clip, state
carried across windows, reset at each epoch), the same train/val split (the last 10% of the
characters) and the same evaluation (the whole val split in batch_size contiguous rows, state
carried, every character scored once). It writes RUN_DIR/metrics.jsonl in charrnn's format, so
`charrnn plot runs/shakespeare runs/torch-lstm` overlays the two.

    pip install 'charrnn[bench]'        # torch==2.13.0, CPU build
    python benchmarks/torch_baseline.py --minutes 10 --out runs/torch-lstm-10min [--dropout 0.2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from charrnn.corpus import BatchStream, Vocab, eval_batches, read_text, split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    parser.add_argument("--out", default="runs/torch-lstm", help="run directory for metrics.jsonl")
    parser.add_argument("--corpus", default="corpora/tinyshakespeare.txt")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--clip", type=float, default=5.0)
    parser.add_argument("--eval-every", type=int, default=500, help="steps between validations")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    text = read_text(args.corpus)
    vocab = Vocab.build(text)
    train_ids, val_ids = split(vocab.encode(text), 0.1)
    stream = BatchStream(train_ids, args.batch_size, args.seq_len)
    V, H, L, B = len(vocab), args.hidden, args.layers, args.batch_size

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(V, H, L, dropout=args.dropout if L > 1 else 0.0)
            self.drop = torch.nn.Dropout(args.dropout)
            self.head = torch.nn.Linear(H, V)

        def forward(self, ids, state):  # ids (T, B) -> logits (T*B, V)
            x = torch.nn.functional.one_hot(ids, V).float()
            out, state = self.lstm(x, state)
            return self.head(self.drop(out)).reshape(-1, V), state

    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    zeros = lambda b: (torch.zeros(L, b, H), torch.zeros(L, b, H))  # noqa: E731

    def evaluate() -> float:
        net.eval()
        total, count, state = 0.0, 0, zeros(B)
        with torch.no_grad():
            for x, y, mask in eval_batches(val_ids, B, args.seq_len):
                logits, state = net(torch.from_numpy(x.T.copy()), state)
                nll = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y.T.reshape(-1).copy()),
                                                        reduction="none")
                m = torch.from_numpy(mask.T.reshape(-1).copy())
                total += float(nll[m].sum())
                count += int(m.sum())
        net.train()
        return total / count

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "metrics.jsonl", "w", encoding="utf-8")
    budget, elapsed, step, cursor, epoch, best = args.minutes * 60, 0.0, 0, 0, 0, math.inf
    state, losses = zeros(B), []
    while elapsed < budget:
        began = time.perf_counter()
        if cursor == 0:
            state = zeros(B)
        x, y = stream.window(cursor)
        state = tuple(s.detach() for s in state)
        logits, state = net(torch.from_numpy(x.T.copy()), state)
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y.T.reshape(-1).copy()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip)
        optimizer.step()
        elapsed += time.perf_counter() - began
        step, cursor = step + 1, cursor + 1
        if cursor == stream.windows_per_epoch:
            cursor, epoch = 0, epoch + 1
        losses.append(loss.item())
        if step % 50 == 0:
            log.write(json.dumps({"event": "train", "step": step, "epoch": epoch,
                                  "loss": float(np.mean(losses)), "elapsed": round(elapsed, 3)}) + "\n")
            losses = []
        if step % args.eval_every == 0 or elapsed >= budget:
            val = evaluate()
            best = min(best, val)
            log.write(json.dumps({"event": "eval", "step": step, "epoch": epoch, "val_loss": val,
                                  "val_bpc": val / math.log(2), "elapsed": round(elapsed, 3)}) + "\n")
            log.flush()
            print(f"step {step} epoch {epoch} {elapsed / 60:.1f} min: val loss {val:.4f}", flush=True)
    log.close()
    print(json.dumps({"torch": torch.__version__, "threads": args.threads, "steps": step,
                      "train_minutes": round(elapsed / 60, 2), "best_val_loss": round(best, 4),
                      "dropout": args.dropout, "hidden": H, "layers": L, "batch_size": B,
                      "seq_len": args.seq_len}))


if __name__ == "__main__":
    main()
