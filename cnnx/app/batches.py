"""Many jobs on any executor: a local process pool (one worker per core by default) or a Dask cluster's, with every
failure (an error, a job that could not be handed over, a worker that died) its job's outcome, and Ctrl-C
stopping the workers so that what they half wrote is removed."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Executor, ProcessPoolExecutor, wait
from contextlib import contextmanager

from cnnx.app.jobs import FilterOutcome, Job, Outcome, run_job_reporting
from cnnx.base import runtime, signals
from cnnx.base.errors import CnnxError, about

__all__ = ["WORKER_DIED", "batch_executor", "run_batch"]


@contextmanager
def batch_executor(jobs: int | None, scheduler: str | None, count: int) -> Iterator[Executor | None]:
    """Worker processes on this machine (``jobs`` of them, one per core by default), or a Dask cluster's executor.

    None (work in this process, on one thread) where one worker is all there is.
    """
    if scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise CnnxError("--scheduler needs Dask: pip install 'cnnx[dask]'") from None
        try:
            client = Client(scheduler, timeout=10)
        except OSError as error:
            raise CnnxError(f"cannot reach the Dask scheduler at {scheduler} ({error})") from None
        try:
            yield client.get_executor()
        finally:
            client.close()
        return
    workers = min(jobs or runtime.num_threads(), count)
    if workers <= 1:
        # One worker is one core, here as in each worker process: -j counts the cores a batch uses.
        previous = runtime.num_threads()
        runtime.set_num_threads(1)
        try:
            yield None
        finally:
            runtime.set_num_threads(previous)
        return
    # Each worker draws on one thread: the processes already keep the cores busy.  Workers are spawned,
    # not forked, since a fork of a process running thread pools can inherit their locks held.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_started) as pool:
        yield pool


def _worker_started() -> None:
    """A worker process: one thread, Ctrl-C left to the parent, SIGTERM unwinding so nothing is left half-written."""
    runtime.set_num_threads(1)
    signals.install(worker=True)


# How the batch machinery says a worker process died: the pool is then broken and must be made anew.
WORKER_DIED = "the worker process died while processing it (killed by the system, perhaps for lack of memory)"


def run_batch(jobs: list, *, processes: int | None = None, scheduler: str | None = None,
              done: Callable | None = None, work: Callable = run_job_reporting) -> list:
    """``work`` on every job; outcomes in the jobs' order, ``done(outcome)`` told as each ends.

    Every failure becomes its job's outcome: an error in the work, a failure
    to hand the job over, or a worker process that died.  A pool whose worker
    died is made anew; the jobs that were running then are run again one at
    a time, and one that kills a pool on its own is given up.  Ctrl-C (or
    SIGTERM) stops the workers, whose half-written folders are removed, and
    is raised again once they are gone.
    """
    outcomes: list = [None] * len(jobs)
    strikes = [0] * len(jobs)
    waiting = list(range(len(jobs)))

    def finish(k: int, outcome) -> None:
        outcomes[k] = outcome
        if done:
            done(outcome)

    while waiting:
        with batch_executor(processes, scheduler, len(waiting)) as executor:
            if executor is None:
                for k in waiting:
                    finish(k, work(jobs[k]))
                break
            # Jobs that were running when a worker died run alone, so the one that kills a pool shows itself.
            suspects = [k for k in waiting if strikes[k]]
            width = 1 if suspects else processes or runtime.num_threads()
            left = _run_on(executor, jobs, suspects or waiting, strikes, finish, work, width)
            waiting = left + [k for k in waiting if suspects and k not in suspects]
    return outcomes


def _run_on(executor: Executor, jobs: list, waiting: list[int], strikes: list[int], finish, work, width: int):
    """Keep ``width`` jobs running on the executor until all are done or it breaks; return the jobs left."""
    running: dict = {}
    queue = list(waiting)
    try:
        while queue or running:
            while queue and len(running) < width:
                k = queue.pop(0)
                with signals.children_ignore_interrupt():  # a worker may be started now
                    running[executor.submit(_in_worker, work, jobs[k])] = k
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                k = running.pop(future)
                try:
                    finish(k, future.result())
                except BrokenExecutor:
                    left = [k, *running.values()]
                    for j in left:
                        strikes[j] += 1
                    for j in [j for j in left if strikes[j] >= 2]:
                        finish(j, _failed(jobs[j], WORKER_DIED))
                    return [j for j in left if strikes[j] < 2] + queue
                except Exception as error:  # handing the job over or getting it back failed
                    finish(k, _failed(jobs[k], about(jobs[k].image, error)))
    except BaseException:
        for future in running:
            future.cancel()
        _stop_workers()
        raise
    return []


def _in_worker(work: Callable, job):
    """``work(job)`` in a worker process: stopped by a signal, it ends the process once its files are cleaned up."""
    with signals.job():
        return work(job)


def _failed(job, error: str):
    return (Outcome if isinstance(job, Job) else FilterOutcome)(job, error=error)


def _stop_workers(seconds: float = 10.0) -> None:
    """Ask this process's worker processes to stop (SIGTERM: they remove what they half wrote) and wait for them."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + seconds
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
