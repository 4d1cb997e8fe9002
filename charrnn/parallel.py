"""Training steps whose batch rows are split between worker processes (`train.processes`).

Most of a step's time outside the matrix products goes to the dozens of small elementwise
NumPy calls of every timestep, and those run on one core however many the machine has. Threads
cannot share them out: each call takes and releases the interpreter lock, and the hand-offs
cost as much as the calls. Processes can. With N processes the B rows of a window are cut into
N contiguous slices; worker k runs model.loss_and_grads on slice k with a single BLAS thread,
and the gradient of the whole window is the row-weighted mean of theirs:

    loss  = sum_k (B_k / B) loss_k          grads = sum_k (B_k / B) grads_k

which equals the unsplit gradient up to float rounding. The dropout masks are drawn for the
whole window in this process before the split, so a run's random stream does not depend on N.

Parameters and each worker's gradients live in shared memory, laid out as one flat block
each; a step sends only the rows, their carried state and the dropout masks through a pipe.
The main process owns the parameters: it writes them (optimizer, restore) only while no
worker is computing. Workers ignore SIGINT, so Ctrl-C reaches the training loop alone, and
end when their pipe closes. If a worker fails, the step is computed in this process instead
and training continues there, unsplit, with a warning: a lost worker never loses a run.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import warnings
from contextlib import contextmanager
from multiprocessing import shared_memory
from typing import Callable

import numpy as np

from .model import CharRNN

# Blocks whose arrays outlived close(): kept here, mapped, so that no later garbage collection
# tries to unmap them under those arrays.
_STILL_VIEWED: list = []
_ALIGN = 64  # bytes; every array in a shared block starts on a cache line
# Read by BLAS libraries when they load: one thread per worker, the workers are the parallelism.
_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _layout(arrays: dict) -> tuple[list, int]:
    """[(key, shape, byte offset)] placing the arrays one after another, and the total bytes."""
    entries, offset = [], 0
    for key, value in arrays.items():
        entries.append((key, value.shape, offset))
        offset += -(-value.nbytes // _ALIGN) * _ALIGN
    return entries, max(offset, _ALIGN)


def _views(shm: shared_memory.SharedMemory, layout: list, dtype) -> dict:
    """The arrays of a shared block, as NumPy views into its buffer.

    Given a memoryview, NumPy keeps the underlying mmap as the views' base but not a buffer
    export of it, so shm.close() would unmap memory still in use. A ctypes array made with
    from_buffer holds an export for as long as it lives, and it becomes the views' base:
    closing the block while a view lives then fails cleanly with BufferError.
    """
    buffer = (ctypes.c_char * shm.size).from_buffer(shm.buf)
    return {key: np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset)
            for key, shape, offset in layout}


@contextmanager
def _blas_single_threaded_children():
    """Processes started inside inherit environment variables that pin BLAS to one thread."""
    saved = {name: os.environ.get(name) for name in _ONE_THREAD}
    os.environ.update({name: "1" for name in _ONE_THREAD})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _worker(conn, model_config: dict, layout: list, params_name: str, grads_name: str) -> None:
    """A worker's life: attach the shared blocks, then answer windows until the pipe closes.

    Receives (x, y, state, keep) for its rows (see CharRNN.forward_backward), writes the
    gradients into its shared block and sends back (loss, new_state), or ("error", message).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    params_shm = shared_memory.SharedMemory(name=params_name)
    grads_shm = shared_memory.SharedMemory(name=grads_name)
    model = CharRNN(**model_config)
    model.params = _views(params_shm, layout, model.dtype)
    grads_out = _views(grads_shm, layout, model.dtype)
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message is None:
                return
            x, y, state, keep = message
            try:
                loss, grads, new_state = model.loss_and_grads(x, y, state, keep=keep)
                for key, g in grads.items():
                    grads_out[key][...] = g
            except Exception as exc:  # reported to the main process, which carries on alone
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
                return
            conn.send((loss, new_state))
    finally:
        del model, grads_out
        params_shm.close()
        grads_shm.close()


class SplitBatch:
    """model.loss_and_grads with the window's rows split between `processes` workers.

    Creating one moves model.params into shared memory (the dict's arrays are replaced by
    views holding the same values); update them in place from then on. Use as a context
    manager, or call close(), to stop the workers and free the memory.
    """

    def __init__(self, model: CharRNN, processes: int, notify: Callable[[str], None] | None = None):
        if processes < 2:
            raise ValueError(f"SplitBatch needs at least 2 processes, got {processes}")
        self.model = model
        self.processes = processes
        self._notify = notify
        self._layout, nbytes = _layout(model.params)
        self._blocks = []
        self._workers = []  # (process, connection, gradient views)
        self._grads = {key: np.empty_like(value) for key, value in model.params.items()}
        try:
            self._start(nbytes)
        except BaseException:
            self.close()
            raise

    def _start(self, nbytes: int) -> None:
        model = self.model
        params_shm = self._new_block(nbytes)
        shared = _views(params_shm, self._layout, model.dtype)
        for key, value in model.params.items():
            shared[key][...] = value
        model.params = shared
        context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads
        with _blas_single_threaded_children():
            for _ in range(self.processes):
                grads_shm = self._new_block(nbytes)
                ours, theirs = context.Pipe()
                process = context.Process(
                    target=_worker, daemon=True, name="charrnn-train-worker",
                    args=(theirs, model.config(), self._layout, params_shm.name, grads_shm.name))
                process.start()
                theirs.close()
                self._workers.append((process, ours, _views(grads_shm, self._layout, model.dtype)))

    def _new_block(self, nbytes: int) -> shared_memory.SharedMemory:
        block = shared_memory.SharedMemory(create=True, size=nbytes)
        self._blocks.append(block)
        return block

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, state: list,
                       rng: np.random.Generator | None = None):
        """As CharRNN.loss_and_grads: x, y (B, T) ids, state per layer of (B, H) arrays.

        Returns (loss, grads, new_state); grads are buffers reused by the next call.
        """
        B, T = x.shape
        keep = self.model.dropout_keep(rng, B, T)
        if not self._workers:
            return self.model.loss_and_grads(x, y, state, keep=keep)
        bounds = np.linspace(0, B, min(self.processes, B) + 1).round().astype(int)
        slices = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        try:
            for (_, conn, _), rows in zip(self._workers, slices):
                part_state = [tuple(np.ascontiguousarray(s[rows]) for s in layer) for layer in state]
                part_keep = None if keep is None else np.ascontiguousarray(keep[:, :, rows])
                conn.send((x[rows], y[rows], part_state, part_keep))
            replies = [conn.recv() for (_, conn, _), _rows in zip(self._workers, slices)]
        except (EOFError, OSError) as exc:
            return self._fall_back(f"a worker process was lost ({type(exc).__name__})", x, y, state, keep)
        failed = [r[1] for r in replies if r[0] == "error"]
        if failed:
            return self._fall_back(f"a worker process failed ({failed[0]})", x, y, state, keep)

        loss = 0.0
        for i, ((_, _, part_grads), rows, (part_loss, _)) in enumerate(zip(self._workers, slices, replies)):
            weight = (rows.stop - rows.start) / B
            loss += weight * part_loss
            for key, total in self._grads.items():
                if i == 0:
                    np.multiply(part_grads[key], weight, out=total)
                else:
                    total += part_grads[key] * total.dtype.type(weight)
        new_state = [tuple(np.concatenate(parts) for parts in zip(*layers))
                     for layers in zip(*(new for _, new in replies))]
        return loss, self._grads, new_state

    def _fall_back(self, reason: str, x, y, state, keep):
        message = f"{reason}; training continues in one process"
        if self._notify is None:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        else:
            self._notify(message)
        self._stop_workers()
        return self.model.loss_and_grads(x, y, state, keep=keep)

    def _stop_workers(self) -> None:
        for process, conn, _ in self._workers:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
        for process, _, _ in self._workers:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        self._workers = []

    def close(self) -> None:
        """Stop the workers and free the shared memory; model.params become private copies."""
        self._stop_workers()
        if self._blocks:
            self.model.params = {key: value.copy() for key, value in self.model.params.items()}
            for block in self._blocks:
                block.unlink()
                try:
                    block.close()
                except BufferError:  # a caller still holds a view: keep the mapping for it
                    _STILL_VIEWED.append(block)
            self._blocks = []

    def __enter__(self) -> "SplitBatch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
