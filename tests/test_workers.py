"""`neuralcodec.workers`: pieces of NumPy work run side by side with one-thread BLAS, results in
order, errors passed on, the BLAS setting restored, and the same pixels whatever the thread
count."""
import multiprocessing
import os
import threading

import numpy as np
import pytest
from imagegen import natural_image
from threadpoolctl import threadpool_info, threadpool_limits

from neuralcodec import workers


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_results_come_back_in_order_and_every_job_runs_once():
    calls = []

    def job(i):
        calls.append(i)
        return i * i

    jobs = [lambda i=i: job(i) for i in range(37)]
    assert workers.run(jobs) == [i * i for i in range(37)]
    assert sorted(calls) == list(range(37))
    assert workers.run([]) == []


def test_blas_runs_on_one_thread_inside_the_jobs_and_is_restored_after():
    before = _blas_threads()
    inside = workers.run([_blas_threads for _ in range(4)])
    if workers.threads() > 1:          # pieces side by side: each on a one-thread BLAS
        assert all(threads == [1] * len(before) for threads in inside)
    else:                              # one at a time, in the caller: BLAS left alone
        assert all(threads == before for threads in inside)
    assert _blas_threads() == before


def test_the_first_error_is_raised_and_the_setting_restored():
    before = _blas_threads()

    def fail():
        raise KeyError("piece 3")

    with pytest.raises(KeyError, match="piece 3"):
        workers.run([lambda: 1, lambda: 2, fail, lambda: 4])
    assert _blas_threads() == before
    assert workers.run([lambda: 5, lambda: 6]) == [5, 6]      # still usable


def test_calls_from_several_threads_at_once_restore_the_original_setting():
    before = _blas_threads()
    results, barrier = {}, threading.Barrier(3)

    def caller(k):
        barrier.wait()
        results[k] = workers.run([lambda k=k, i=i: (k, i, float(np.ones((64, 64)) @ np.ones(64) @ np.ones(64)))
                                  for i in range(8)])

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k] == [(k, i, 64.0 * 64.0) for i in range(8)] for k in range(3))
    assert _blas_threads() == before


def test_the_pool_follows_the_blas_thread_count():
    with threadpool_limits(limits=1, user_api="blas"):
        assert workers.threads() == 1
    assert 1 <= workers.threads() <= (os.cpu_count() or 1)


def test_pixels_and_bytes_do_not_depend_on_the_thread_count(codec, monkeypatch):
    # large enough for several pieces in every stage: 3 context strips, 3 table-grouping
    # pieces per half, 2 x 2 post-filter tiles, 5 synthesis bands
    rgb = natural_image(272, 400, seed=5)
    with threadpool_limits(limits=1, user_api="blas"):     # everything in one thread
        assert workers.threads() == 1
        data = codec.compress(rgb, quality=60)
        pixels = np.asarray(codec.decompress(data))
    monkeypatch.setattr(workers, "_cores", lambda: 2)      # side by side even on one core
    with threadpool_limits(limits=2, user_api="blas"):
        assert workers.threads() == 2
        assert codec.compress(rgb, quality=60) == data
        assert np.array_equal(np.asarray(codec.decompress(data)), pixels)


def test_a_piece_that_runs_pieces_runs_them_itself():
    def outer(k):
        return workers.run([lambda i=i: (k, i, threading.current_thread().name) for i in range(3)])

    results = workers.run([lambda k=k: outer(k) for k in range(4)])
    for k, inner in enumerate(results):
        assert [r[:2] for r in inner] == [(k, 0), (k, 1), (k, 2)]
        assert len({r[2] for r in inner}) == 1            # one thread: the piece's own


def test_the_error_of_the_first_failing_job_in_order_is_raised():
    def fail(i):
        raise ValueError(f"piece {i}")

    with pytest.raises(ValueError, match="piece 2"):
        workers.run([lambda: 0, lambda: 1, lambda: fail(2), lambda: fail(3)])


def _decode_in_child(data, queue):
    from neuralcodec.codec import Codec

    queue.put(np.asarray(Codec().decompress(data)).tobytes())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork exists on POSIX systems only")
def test_a_forked_child_decodes_after_the_parent_used_the_pool(codec):
    data = codec.compress(natural_image(64, 64, seed=6), quality=40)
    expected = np.asarray(codec.decompress(data)).tobytes()      # the parent's pool is running
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_decode_in_child, args=(data, queue))
    child.start()
    got = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0 and got == expected
