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
worker is computing. Workers ignore SIGINT and SIGTERM, so Ctrl-C or a stop request reaches
the training loop alone, and they end when their pipe closes. If a worker fails, dies or stops
answering, the step is computed in this process instead and training continues there, unsplit,
with a warning: a lost worker never loses a run.
"""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import os
import shutil
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from multiprocessing import shared_memory
from multiprocessing.connection import wait
from typing import Callable

import numpy as np

from . import heap
from .model import CharRNN, ModelSpec

# Blocks whose arrays outlived close() (their close() raised BufferError): kept open here, so
# that garbage collection does not retry the close and print the error; the memory is unlinked.
_STILL_VIEWED: list = []
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_SHM_DIR = "/dev/shm"  # where Linux keeps shared memory blocks
_ALIGN = 64  # bytes; every array in a shared block starts on a cache line
# Read by BLAS libraries when they load: one thread per worker, the workers are the parallelism.
_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# A worker that is alive but silent (stopped, deadlocked) would hold a step forever. The rows are
# split evenly, so once one worker has answered the others are due soon after: each may take
# _LATE_FACTOR times as long as the first did, and never less than _LATE_FLOOR_S seconds.
_LATE_FACTOR = 20
_LATE_FLOOR_S = 60.0


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


@contextmanager
def _signals_ignored_by_children():
    """Processes started inside begin with SIGINT and SIGTERM ignored (a disposition kept
    across exec), so a Ctrl-C while a worker is still importing cannot kill it. The signals
    are ignored here too meanwhile: a fraction of a second."""
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _worker(conn, model_config: dict, layout: list, params_name: str, grads_name: str) -> None:
    """A worker's life: attach the shared blocks, answer windows until told to stop or until
    the pipe closes, detach. It never prints: a failure goes to the main process as
    ("error", message) while the pipe works, and is otherwise seen there as the pipe closing."""
    for sig in _STOP_SIGNALS:  # the main process decides when a run stops
        signal.signal(sig, signal.SIG_IGN)
    heap.keep_freed_memory()  # a spawned interpreter starts with glibc's defaults again
    blocks = []
    try:
        blocks = [shared_memory.SharedMemory(name=name) for name in (params_name, grads_name)]
        _serve(conn, CharRNN(ModelSpec(**model_config)), layout, *blocks)
    except Exception as exc:
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        for block in blocks:  # the views died with _serve's frame
            try:
                block.close()
            except BufferError:
                pass


def _serve(conn, model: CharRNN, layout: list, params_shm, grads_shm) -> None:
    """Receive (x, y, state, keep) for this worker's rows (see CharRNN.forward_backward), write
    the gradients into the shared block, send back ("ok", loss, new_state); None or EOF ends it."""
    model.params = _views(params_shm, layout, model.dtype)
    grads_out = _views(grads_shm, layout, model.dtype)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the main process has gone
            return
        if message is None:
            return
        x, y, state, keep = message
        loss, grads, new_state = model.loss_and_grads(x, y, state, keep=keep)
        for key, g in grads.items():
            grads_out[key][...] = g
        try:
            conn.send(("ok", loss, new_state))
        except OSError:
            return


def _gather(conns: list) -> list:
    """One reply from each connection, in their order; TimeoutError if one is overdue (see
    _LATE_FACTOR). A closed pipe raises EOFError or OSError from its recv."""
    started = time.monotonic()
    replies = {}
    deadline = None
    while len(replies) < len(conns):
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = wait([conn for conn in conns if conn not in replies], timeout)
        if not ready:
            raise TimeoutError(f"no reply {deadline - started:.0f} s after the step began")
        for conn in ready:
            replies[conn] = conn.recv()
        if deadline is None:
            first = time.monotonic() - started
            deadline = started + max(_LATE_FLOOR_S, _LATE_FACTOR * first)
    return [replies[conn] for conn in conns]


class SplitBatch:
    """model.loss_and_grads with the window's rows split between `processes` workers.

    Creating one moves the parameters into shared memory: model.params becomes a new dict of
    views holding the same values (re-read it; update its arrays in place). close() stops the
    workers, frees the memory and gives model.params private copies again; use the object as a
    context manager. Raises OSError when the shared memory or the processes cannot be had.
    """

    def __init__(self, model: CharRNN, processes: int, notify: Callable[[str], None] | None = None):
        if processes < 2:
            raise ValueError(f"SplitBatch needs at least 2 processes, got {processes}")
        self.model = model
        self.processes = processes
        self.notify = notify  # called with the warning of a fallback; None: warnings.warn
        self._layout, nbytes = _layout(model.params)
        self._blocks = []
        self._workers = []  # (process, connection, gradient views)
        self._grads = {key: np.empty_like(value) for key, value in model.params.items()}
        self._scratch = {key: np.empty_like(value) for key, value in model.params.items()}
        try:
            self._start(nbytes)
        except BaseException:
            self.close()
            raise

    def _start(self, nbytes: int) -> None:
        model = self.model
        needed = (self.processes + 1) * nbytes
        if os.path.isdir(_SHM_DIR) and shutil.disk_usage(_SHM_DIR).free < needed:
            # Shared memory is reserved lazily: running out later is a SIGBUS, not an error.
            raise OSError(f"{_SHM_DIR} has {shutil.disk_usage(_SHM_DIR).free / 2**20:.0f} MiB free, "
                          f"{needed / 2**20:.0f} MiB are needed")
        params_shm = self._new_block(nbytes)
        shared = _views(params_shm, self._layout, model.dtype)
        for key, value in model.params.items():
            shared[key][...] = value
        model.params = shared
        context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads
        with _blas_single_threaded_children(), _signals_ignored_by_children():
            for _ in range(self.processes):
                grads_shm = self._new_block(nbytes)
                ours, theirs = context.Pipe()
                process = context.Process(
                    target=_worker, daemon=True, name="charrnn-train-worker",
                    args=(theirs, dataclasses.asdict(model.spec), self._layout, params_shm.name, grads_shm.name))
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
        active = self._workers[:len(slices)]  # fewer rows than workers leaves some idle
        try:
            for (_, conn, _), rows in zip(active, slices):
                part_state = [tuple(np.ascontiguousarray(s[rows]) for s in layer) for layer in state]
                part_keep = None if keep is None else np.ascontiguousarray(keep[:, :, rows])
                conn.send((x[rows], y[rows], part_state, part_keep))
            replies = _gather([conn for _, conn, _ in active])
        except TimeoutError as exc:
            return self._fall_back(f"a worker process stopped answering ({exc})", x, y, state, keep)
        except (EOFError, OSError) as exc:
            return self._fall_back(f"a worker process was lost ({type(exc).__name__})", x, y, state, keep)
        except BaseException:
            # Interrupted mid-exchange: workers may still be computing into their blocks and
            # their replies would answer the next call. Nothing of this step can be used.
            self._stop_workers()
            raise
        failed = [reply[1] for reply in replies if reply[0] == "error"]
        if failed:
            return self._fall_back(f"a worker process failed ({failed[0]})", x, y, state, keep)

        weights = [(rows.stop - rows.start) / B for rows in slices]
        loss = sum(w * part_loss for w, (_, part_loss, _) in zip(weights, replies))
        part_grads = [views for _, _, views in active]
        for key, total in self._grads.items():
            np.multiply(part_grads[0][key], weights[0], out=total)
            scratch = self._scratch[key]
            for views, w in zip(part_grads[1:], weights[1:]):
                np.multiply(views[key], w, out=scratch)
                total += scratch
        new_state = [tuple(np.concatenate(parts) for parts in zip(*layers))
                     for layers in zip(*(new for _, _, new in replies))]
        return loss, self._grads, new_state

    def _fall_back(self, reason: str, x, y, state, keep):
        message = f"{reason}; training continues in one process"
        if self.notify is None:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        else:
            self.notify(message)
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
            process.join(timeout=2)  # an idle worker ends at once; a busy one is not waited for
            if process.is_alive():
                process.kill()
                process.join()
        self._workers = []

    def close(self) -> None:
        """Stop the workers and free the shared memory; model.params become private copies."""
        self._stop_workers()
        if self._blocks:
            self.model.params = {key: value.copy() for key, value in self.model.params.items()}
            blocks, self._blocks = self._blocks, []
            for block in blocks:
                try:
                    block.unlink()
                except FileNotFoundError:  # removed from outside
                    pass
                try:
                    block.close()
                except BufferError:  # a caller still holds a view: keep the mapping for it
                    _STILL_VIEWED.append(block)

    def __enter__(self) -> "SplitBatch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
