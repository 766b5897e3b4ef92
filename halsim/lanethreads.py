"""Threads that run one lane's steps: a real device's readers, one copy queue, its import lane.

Why not ``concurrent.futures.ThreadPoolExecutor``: every step would cost a
Future (a condition and its lock), a work item, the pool's idle semaphore and
the future's own notifications — Python code that holds the interpreter's lock
while a dozen readers wait for it. A small ring moves thousands of steps a
second, and on the lent 16-CPU machine that bookkeeping, not the bytes, set
the pace. Here a step is one put on a queue and :meth:`Pending.complete` when
it is done.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

from halsim.device import Pending
from halsim.errors import HalsimError, UploadCancelled
from halsim.plan import Step

_STOP = None


class LaneThreads:
    """Up to ``threads`` threads taking the lane's steps in the order they were handed over.

    A thread starts when a step is handed over and fewer threads run than steps were
    ever handed over (a small upload starts only the threads it uses: starting and
    joining a dozen readers costs about 2 ms). The threads are daemons: :meth:`shutdown`,
    which every run's cleanup calls, joins them."""

    def __init__(self, threads: int, name: str, run: Callable[[Step], None],
                 setup: Callable[[], None] | None = None):
        self.name = name
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._run = run
        self._setup = setup
        self._closed = False
        self._most = max(1, threads)
        self._handed = 0
        self._threads: list[threading.Thread] = []

    def submit(self, pending: Pending) -> Pending:
        if self._closed:
            raise HalsimError(f"{pending.step.describe()}: handed to {self.name} after it shut down")
        self._handed += 1
        if len(self._threads) < min(self._most, self._handed):
            self._start_thread()
        self._work.put(pending)
        return pending

    def _start_thread(self) -> None:
        k = len(self._threads)
        thread = threading.Thread(target=self._loop, name=f"{self.name}_{k}", daemon=True)
        try:
            thread.start()
        except RuntimeError as err:  # the system gives no more threads: the run fails, its cleanup joins ours
            raise HalsimError(f"cannot start thread {k + 1} of {self._most} for {self.name}: {err}") from err
        self._threads.append(thread)

    def _loop(self) -> None:
        setup_error = None
        if self._setup is not None:
            try:
                self._setup()
            except BaseException as err:  # every step this thread takes fails with it
                setup_error = err
        while True:
            pending = self._work.get()
            if pending is _STOP:
                return
            if setup_error is not None:
                pending.complete(setup_error)
                continue
            try:
                self._run(pending.step)
            except BaseException as err:
                pending.complete(err)
            else:
                pending.complete()

    def shutdown(self) -> None:
        """Fail the steps not yet started, let the running ones end, stop the threads."""
        self._closed = True
        while True:
            try:
                pending = self._work.get_nowait()
            except queue.Empty:
                break
            if pending is not _STOP:
                pending.complete(UploadCancelled(f"{pending.step.describe()}: not started, the lane shut down"))
        for _ in self._threads:
            self._work.put(_STOP)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()


__all__ = ["LaneThreads"]
