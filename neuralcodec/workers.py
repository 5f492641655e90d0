"""Spreading the NumPy networks' work over the cores: fixed pieces, a thread pool, one-thread BLAS.

Why: decoding is NumPy (`model/numpy_synthesis.py`, `model/numpy_postfilter.py`, the exact
integer networks). Its matrix products run on every core (OpenBLAS has its own threads), but
everything between them (ReLU, adding up the taps of a convolution, rounding, regrouping
pixels) runs on one core, and small products split over two BLAS threads pay for the split.
Measured on a 768x512 image with two cores: a fifth of the synthesis and a quarter of the
post-filter was that single-core work. Here a stage is cut into independent pieces (bands of
rows, tiles, strips) that run on a pool of threads, each piece calling a one-thread BLAS, so
both cores stay busy through all of it (NumPy releases the interpreter lock inside its
loops and products).

Determinism: the pieces are fixed by the stage and the image's size, never by the number of
threads; the thread count only decides which thread computes a piece (side by side, each on a
one-thread BLAS, or one after the other in the caller with BLAS as set: OpenBLAS splits a
product over its threads by rows and columns, never along the sum). A file decodes to the same
pixels whatever the thread count (`tests/test_workers.py` checks it).

The pool is as large as the BLAS thread count NumPy would otherwise use (so the settings users
already know, `OPENBLAS_NUM_THREADS` or threadpoolctl's limits, keep working; `vaez --jobs`
workers get one thread each), at most the cores this process may run on. The BLAS limit is
process-wide while any piece runs (threadpoolctl changes the library's setting): NumPy
products other threads of the process make meanwhile also run on one thread.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_state = {"controller": None, "pool": None, "active": 0, "limiter": None}
_inside = threading.local()        # .piece: this thread is running a piece of some `run`


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def _blas():
    """threadpoolctl's handle on the BLAS libraries loaded (None: none it can control)."""
    if _state["controller"] is None:
        from threadpoolctl import ThreadpoolController

        _state["controller"] = ThreadpoolController().select(user_api="blas")
    blas = _state["controller"]
    return blas if blas.lib_controllers else None


def threads() -> int:
    """How many pieces run at once: BLAS's current thread count, at most the cores (1 when no
    BLAS thread pool can be controlled: everything then runs in the calling thread)."""
    with _lock:
        if _state["active"]:              # BLAS is limited by us right now: what it was before
            return _state["limiter"].threads
        blas = _blas()
        if blas is None:
            return 1
        return max(1, min(_cores(), max(lib.num_threads for lib in blas.lib_controllers)))


class _Limit:
    """BLAS held at one thread while any `run` is active (reference-counted: concurrent calls
    from several threads restore the original setting only when the last one ends).
    ``available``: the pieces the machine runs at once, as counted before the limit."""

    def __init__(self, available: int):
        self.threads = available

    def __enter__(self):
        with _lock:
            if _state["active"] == 0:
                _state["limiter"] = self
                self.original = _blas().limit(limits=1)
            _state["active"] += 1

    def __exit__(self, *exc):
        with _lock:
            _state["active"] -= 1
            if _state["active"] == 0:
                _state["limiter"].original.restore_original_limits()
                _state["limiter"] = None


def run(jobs: Sequence[Callable[[], T]]) -> list[T]:
    """Run the zero-argument ``jobs`` (independent of each other) and return their results in
    order. If jobs fail, the exception of the first failing job (in list order, among those
    that ran) is raised here. A job that calls `run` itself gets its pieces run one after the
    other in its own thread (no pool thread ever waits for the pool)."""
    jobs = list(jobs)
    available = 1 if getattr(_inside, "piece", False) else threads()
    count = min(available, len(jobs))
    if count <= 1:
        return [job() for job in jobs]
    results: list = [None] * len(jobs)
    errors: dict[int, BaseException] = {}
    position = iter(range(len(jobs)))
    take = threading.Lock()

    def runner():
        _inside.piece = True
        try:
            while not errors:
                with take:
                    i = next(position, None)
                if i is None:
                    return
                try:
                    results[i] = jobs[i]()
                except BaseException as exc:     # noqa: BLE001  (handed to the caller)
                    errors[i] = exc
        finally:
            _inside.piece = False

    with _Limit(available):
        futures = []
        for _ in range(count - 1):
            try:
                futures.append(_pool().submit(runner))
            except RuntimeError:        # no thread to be had (interpreter shutting down, ...)
                break
        runner()                        # the calling thread works too, until no job is left
        for future in futures:
            # helpers still queued behind another caller's work are not waited for
            if not future.cancel():
                future.result()
    if errors:
        raise errors[min(errors)]
    return results


def _pool():
    with _lock:
        if _state["pool"] is None:
            from concurrent.futures import ThreadPoolExecutor

            _state["pool"] = ThreadPoolExecutor(max_workers=max(1, _cores() - 1),
                                                thread_name_prefix="vaez")
        return _state["pool"]


def _forget_after_fork() -> None:
    """A forked child has the parent's pool object but none of its threads: start afresh
    (and with BLAS as it was, should the fork have happened while pieces were running)."""
    global _lock
    limiter = _state["limiter"]
    if limiter is not None:
        try:
            limiter.original.restore_original_limits()
        except Exception:      # noqa: BLE001  (best effort in a fresh child)
            pass
    _lock = threading.Lock()
    _state.update(controller=None, pool=None, active=0, limiter=None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
