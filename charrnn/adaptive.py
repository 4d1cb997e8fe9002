"""The adaptive softmax head (Grave et al. 2017), exact and normalised, in NumPy.

The characters are ranked by their frequency in the training text (`order`: rank -> id). The
`cutoffs` c_0 < c_1 < ... < c_{K-1} < V split the ranks into a shortlist [0, c_0) and K tail
clusters [c_i, c_{i+1}) (c_K = V). For a top hidden state h (H,):

    z      = h W + b                         head: W (H, c_0 + K), b (c_0 + K,)
    p(c)   = softmax(z)[rank(c)]             for a shortlist character
    p(c)   = softmax(z)[c_0 + i] * softmax(h P_i W_i + b_i)[rank(c) - c_i]
                                             for a character of cluster i: P_i (H, d_i),
                                             W_i (d_i, c_{i+1} - c_i), b_i (c_{i+1} - c_i,)

Every p sums to 1 over the V characters, so the loss is comparable with the full softmax's.
d_i = H // div^(i+1): rarer clusters get narrower projections, which is where the saving is
(a full head costs H*V multiply-adds per character, this one H*(c_0+K) plus, for the ~10% of
characters in the tail, H*d_i + d_i*size_i). Training scores a tail cluster only for the rows
whose target falls in it; `log_probs` scores every cluster for every row (sampling needs the
whole distribution).

It is PyTorch's nn.AdaptiveLogSoftmaxWithLoss with head_bias=True and with a bias on each
cluster's output layer (torch's tail layers have none; ours start at the conditional log
frequencies, see `unigram_biases`): head.weight = W^T, head.bias = b, tail[i][0].weight =
P_i^T, tail[i][1].weight = W_i^T, tail[i][1].bias = b_i, targets = ranks.
"""

from __future__ import annotations

import numpy as np

from .functional import softmax_cross_entropy_


DEFAULT_COVERAGE = (0.8, 0.95, 0.99)  # Tang poems (6,762 characters): ranks 646, 1,772, 3,243


def default_cutoffs(counts: np.ndarray, coverage: tuple[float, ...] = DEFAULT_COVERAGE) -> list[int]:
    """Cutoffs where the most frequent characters first cover each share of the tokens.

    counts: (V,) occurrences of each id in the training text. Cutoffs that would leave an
    empty cluster (or an empty shortlist) are dropped, so a small vocabulary may get fewer.
    """
    V = len(counts)
    covered = np.cumsum(np.sort(counts)[::-1]) / max(int(counts.sum()), 1)
    cutoffs = []
    for share in coverage:
        c = int(np.searchsorted(covered, share) + 1)
        if (cutoffs[-1] if cutoffs else 0) < c < V:
            cutoffs.append(c)
    return cutoffs


def frequency_order(counts: np.ndarray) -> list[int]:
    """ids from the most frequent to the least (ties by id): rank -> id."""
    return np.lexsort((np.arange(len(counts)), -np.asarray(counts))).tolist()


def projection_sizes(hidden_size: int, clusters: int, div: float) -> list[int]:
    """d_i = H // div^(i+1), at least 1 (PyTorch's rule)."""
    return [max(1, int(hidden_size // (div ** (i + 1)))) for i in range(clusters)]


class AdaptiveHead:
    """The head's arithmetic over explicit parameters (dotted keys `head.W`, `head.b`,
    `head.tail.{i}.P`, `head.tail.{i}.W`, `head.tail.{i}.b`), like the cells."""

    def __init__(self, hidden_size: int, vocab_size: int, cutoffs: list[int], div: float,
                 order: list[int]):
        if not cutoffs or list(cutoffs) != sorted(set(cutoffs)) or not 0 < cutoffs[0] or cutoffs[-1] >= vocab_size:
            raise ValueError(f"head cutoffs must increase within (0, {vocab_size}), got {cutoffs!r}")
        if sorted(order) != list(range(vocab_size)):
            raise ValueError("the head's frequency order must be a permutation of the vocabulary ids")
        self.H, self.V = hidden_size, vocab_size
        self.bounds = [*cutoffs, vocab_size]        # cluster i holds ranks [bounds[i], bounds[i+1])
        self.shortlist = cutoffs[0]
        self.clusters = len(cutoffs)
        self.sizes = projection_sizes(hidden_size, self.clusters, div)
        self.order = np.asarray(order, dtype=np.int64)            # rank -> id
        self.rank = np.empty(vocab_size, dtype=np.int64)          # id -> rank
        self.rank[self.order] = np.arange(vocab_size)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"head.W": (self.H, self.shortlist + self.clusters), "head.b": (self.shortlist + self.clusters,)}
        for i, d in enumerate(self.sizes):
            size = self.bounds[i + 1] - self.bounds[i]
            shapes.update({f"head.tail.{i}.P": (self.H, d), f"head.tail.{i}.W": (d, size),
                           f"head.tail.{i}.b": (size,)})
        return shapes

    def init_params(self, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
        """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights (as nn.Linear), zero biases."""
        params = {}
        for key, shape in self.shapes().items():
            if key.endswith(".b"):
                params[key] = np.zeros(shape, dtype=dtype)
            else:
                bound = 1.0 / np.sqrt(shape[0])
                params[key] = rng.uniform(-bound, bound, size=shape).astype(dtype)
        return params

    def unigram_biases(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Biases under which the first prediction is the (add-one) unigram distribution: the
        head's at the log frequencies of the shortlist and of each cluster's mass, each
        cluster's at the log frequencies within it (all shifted to mean zero)."""
        p = (np.asarray(counts, dtype=np.float64) + 1.0)[self.order]
        p /= p.sum()
        masses = [p[a:b].sum() for a, b in zip(self.bounds[:-1], self.bounds[1:])]
        head = np.log(np.r_[p[:self.shortlist], masses])
        biases = {"head.b": head - head.mean()}
        for i, (a, b) in enumerate(zip(self.bounds[:-1], self.bounds[1:])):
            inner = np.log(p[a:b] / masses[i])
            biases[f"head.tail.{i}.b"] = inner - inner.mean()
        return biases

    def _targets(self, ids: np.ndarray):
        """(head target per row, cluster per row (-1: shortlist), rank per row)."""
        rank = self.rank[ids]
        cluster = np.searchsorted(self.bounds, rank, side="right") - 1   # -1 in the shortlist
        head_target = np.where(cluster < 0, rank, self.shortlist + cluster)
        return head_target, cluster, rank

    def loss(self, params: dict, h: np.ndarray, ids: np.ndarray, grad_scale: float | None = None):
        """Per-row NLL and, with grad_scale, the gradients of grad_scale * nll.sum().

        h: (N, H) top hidden states; ids: (N,) targets (vocabulary ids).
        Returns (nll (N,) in h's dtype, grads dict like the head's params or None, dh (N, H) or None).
        """
        head_target, cluster, rank = self._targets(ids)
        z = h @ params["head.W"]                                  # (N, c_0 + K), becomes dz
        nll = softmax_cross_entropy_(z, head_target, bias=params["head.b"], grad_scale=grad_scale)
        grads, dh = None, None
        if grad_scale is not None:
            grads = {"head.W": h.T @ z, "head.b": z.sum(axis=0)}
            dh = z @ params["head.W"].T
        for i in range(self.clusters):
            rows = np.flatnonzero(cluster == i)
            P, W, b = (params[f"head.tail.{i}.{name}"] for name in "PWb")
            if rows.size == 0:  # no target in this cluster: it takes no part in the loss
                if grad_scale is not None:
                    grads.update({f"head.tail.{i}.P": np.zeros_like(P),
                                  f"head.tail.{i}.W": np.zeros_like(W), f"head.tail.{i}.b": np.zeros_like(b)})
                continue
            h_i = h[rows]                                         # (n_i, H)
            u = h_i @ P                                           # (n_i, d_i)
            zc = u @ W                                            # (n_i, size_i), becomes dzc
            nll[rows] += softmax_cross_entropy_(zc, rank[rows] - self.bounds[i], bias=b,
                                                grad_scale=grad_scale)
            if grad_scale is not None:
                du = zc @ W.T                                     # (n_i, d_i)
                grads.update({f"head.tail.{i}.P": h_i.T @ du, f"head.tail.{i}.W": u.T @ zc,
                              f"head.tail.{i}.b": zc.sum(axis=0)})
                dh[rows] += du @ P.T
        return nll, grads, dh

    def log_probs(self, params: dict, h: np.ndarray) -> np.ndarray:
        """(B, V) log p(c | h) for every character, columns in id order; h (B, H)."""
        ranked = np.empty((h.shape[0], self.V), dtype=h.dtype)  # columns by rank: contiguous blocks
        head = _log_softmax(h @ params["head.W"] + params["head.b"])
        ranked[:, :self.shortlist] = head[:, :self.shortlist]
        for i in range(self.clusters):
            P, W, b = (params[f"head.tail.{i}.{name}"] for name in "PWb")
            inner = _log_softmax((h @ P) @ W + b)
            ranked[:, self.bounds[i]:self.bounds[i + 1]] = inner + head[:, self.shortlist + i, None]
        return np.take(ranked, self.rank, axis=1)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
