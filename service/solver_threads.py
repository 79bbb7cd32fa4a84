"""The threads that run a model's solves, handing results straight back to the event loop.

Why not ``loop.run_in_executor`` on a ``ThreadPoolExecutor``: for a sub-millisecond solve its
hand-off is a measurable share of a request (docs/service.md, "Where a request's time goes").
Two things are cheaper here, measured side by side on twomoon n=1 (solve ≈ 0.37 ms hot): work
goes to the most recently idle thread (a stack, not a shared queue), whose caches are still
warm, instead of whichever thread the queue wakes; and the thread settles the asyncio future
itself with one ``call_soon_threadsafe``, instead of a concurrent future chained to an asyncio
one. Together ≈ 60 µs less per request (0.57 → 0.51 ms round trip).
"""
from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = None


class SolverThreads:
    """``n`` daemon threads; :meth:`submit` runs ``fn(*args)`` on one and returns an asyncio future.

    Work beyond ``n`` at once waits in FIFO order (callers normally bound it themselves, as the
    micro-batcher does with its solver slots).
    """

    def __init__(self, n: int, name: str = "knet-solve") -> None:
        if n < 1:
            raise ValueError(f"need at least one solver thread, got {n}")
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue] = []  # a stack: the most recently idle thread is last
        self._waiting: collections.deque = collections.deque()
        self._closed = False
        for i in range(n):
            inbox: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=self._work, args=(inbox,), name=f"{name}_{i}", daemon=True).start()
            self._idle.append(inbox)

    def submit(self, fn: Callable[..., Any], *args: Any,
               on_finish: Callable[[], None] | None = None) -> asyncio.Future:
        """Run ``fn(*args)`` on a solver thread; call inside the running event loop.

        ``on_finish`` runs in the loop when the thread is done with the call, even if the returned
        future was cancelled meanwhile (so a slot freed there matches a thread really free).

        Raises:
            RuntimeError: after :meth:`close`.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        item = (loop, future, on_finish, fn, args)
        with self._lock:
            if self._closed:
                raise RuntimeError("solver threads are closed")
            if self._idle:
                self._idle.pop().put(item)
            else:
                self._waiting.append(item)
        return future

    def close(self) -> None:
        """Stop the threads once their current call returns; waiting calls are cancelled."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = list(self._waiting), collections.deque()
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(_STOP)
        for loop, future, on_finish, _, _ in waiting:
            loop.call_soon_threadsafe(_settle, future, on_finish, None, asyncio.CancelledError())

    def _work(self, inbox: queue.SimpleQueue) -> None:
        item = inbox.get()
        while item is not _STOP:
            loop, future, on_finish, fn, args = item
            try:
                result, error = fn(*args), None
            except BaseException as err:  # handed to the awaiting coroutine
                result, error = None, err
            with self._lock:  # take waiting work, or go idle, before the loop can submit more
                if self._waiting:
                    item = self._waiting.popleft()
                elif self._closed:
                    item = _STOP
                else:
                    self._idle.append(inbox)
                    item = None
            try:
                loop.call_soon_threadsafe(_settle, future, on_finish, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass
            if item is None:
                item = inbox.get()


def _settle(future: asyncio.Future, on_finish, result, error) -> None:
    if on_finish is not None:
        on_finish()
    if future.done():  # cancelled while the thread worked
        return
    if error is None:
        future.set_result(result)
    elif isinstance(error, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(error)
