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
threads, and BLAS runs on one thread inside them, so a file decodes to the same pixels
whatever the thread count.

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
    from several threads restore the original setting only when the last one ends)."""

    def __init__(self, count: int):
        self.threads = count

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
    order; the first exception any job raises is re-raised here. Jobs must not call `run`."""
    jobs = list(jobs)
    count = min(threads(), len(jobs))
    if count <= 1:
        return [job() for job in jobs]
    results: list = [None] * len(jobs)
    errors: list[BaseException] = []
    position = iter(range(len(jobs)))
    take = threading.Lock()

    def runner():
        while not errors:
            with take:
                i = next(position, None)
            if i is None:
                return
            try:
                results[i] = jobs[i]()
            except BaseException as exc:     # noqa: BLE001  (handed to the caller)
                errors.append(exc)

    with _Limit(count):
        futures = [_pool().submit(runner) for _ in range(count - 1)]
        runner()                            # the calling thread works too
        for future in futures:
            future.result()
    if errors:
        raise errors[0]
    return results


def _pool():
    with _lock:
        if _state["pool"] is None:
            from concurrent.futures import ThreadPoolExecutor

            _state["pool"] = ThreadPoolExecutor(max_workers=max(1, _cores() - 1),
                                                thread_name_prefix="vaez")
        return _state["pool"]


def _forget_after_fork() -> None:
    """A forked child has the parent's pool object but none of its threads: start afresh."""
    global _lock
    _lock = threading.Lock()
    _state.update(controller=None, pool=None, active=0, limiter=None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
