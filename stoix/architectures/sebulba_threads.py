"""Thread plumbing for Sebulba systems: lifetime, parameter server and rollout pipeline.

Sebulba runs actor threads (stepping non-JAX environments and running inference) beside a
learner. Three rules keep such a run from hanging:
- every blocking call waits in short slices and gives up once the shared `Lifetime` stops;
- an exception in any thread stops the lifetime and is re-raised by the main thread
  (`Lifetime.raise_if_failed`), so the process exits with that error;
- shutdown drains the pipeline, so an actor blocked on a full queue can finish (the original
  Stoix could deadlock there), and every join has a timeout.
"""

import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

POLL_S = 0.05  # how often blocked calls look at the stop signal


class ThreadFailed(RuntimeError):
    """Raised in the main thread when a worker thread died with an exception."""


class Lifetime:
    """A stop signal shared by every thread of a run, remembering the first failure."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._failure: tuple[str, BaseException] | None = None

    def stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def fail(self, thread_name: str, error: BaseException) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = (thread_name, error)
        self.stop()

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            name, error = self._failure
            raise ThreadFailed(f"thread {name!r} failed: {type(error).__name__}: {error}") from error

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if the lifetime stopped meanwhile."""
        return self._stop.wait(seconds)


def start_thread(name: str, target: Callable[[], None], lifetime: Lifetime) -> threading.Thread:
    """Run `target` in a daemon thread; an exception in it fails the whole lifetime."""

    def _run() -> None:
        try:
            target()
        except BaseException as error:  # noqa: BLE001 - every failure must stop the run
            traceback.print_exc()
            lifetime.fail(name, error)

    thread = threading.Thread(target=_run, name=name, daemon=True)
    thread.start()
    return thread


def join_all(threads: Iterable[threading.Thread], timeout_s: float) -> list[str]:
    """Join every thread, each with a timeout; returns the names of those still alive."""
    stuck = []
    for thread in threads:
        thread.join(timeout_s)
        if thread.is_alive():
            stuck.append(thread.name)
    return stuck


class ParamsServer:
    """The learner publishes parameters; actors read the latest, or (synchronous runs) wait
    for a given version so that every rollout is collected with known parameters."""

    def __init__(self, lifetime: Lifetime) -> None:
        self._lifetime = lifetime
        self._condition = threading.Condition()
        self._params: Any = None
        self._version = -1

    def publish(self, params: Any) -> int:
        with self._condition:
            self._params = params
            self._version += 1
            self._condition.notify_all()
            return self._version

    def latest(self) -> tuple[Any, int]:
        with self._condition:
            return self._params, self._version

    def wait_for(self, version: int) -> tuple[Any, int] | None:
        """Block until `version` (or newer) is published; None if the run stopped first."""
        with self._condition:
            while self._version < version:
                if self._lifetime.should_stop():
                    return None
                self._condition.wait(POLL_S)
            return self._params, self._version


class Pipeline:
    """A bounded queue of rollouts from actors to the learner."""

    def __init__(self, max_size: int, lifetime: Lifetime) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max_size)
        self._lifetime = lifetime

    def put(self, item: Any) -> bool:
        """Enqueue, waiting while full; False if the run stopped before there was room."""
        while not self._lifetime.should_stop():
            try:
                self._queue.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout_s: float) -> Any:
        """Dequeue, waiting up to `timeout_s`; None if nothing came or the run stopped."""
        waited = 0.0
        while waited < timeout_s and not self._lifetime.should_stop():
            try:
                return self._queue.get(timeout=POLL_S)
            except queue.Empty:
                waited += POLL_S
        return None

    def drain(self) -> int:
        """Drop everything queued (at shutdown, so blocked producers can finish)."""
        dropped = 0
        while True:
            try:
                self._queue.get_nowait()
                dropped += 1
            except queue.Empty:
                return dropped


class AsyncEvaluator:
    """Evaluates parameters in its own thread so the learner never waits for an evaluation.

    `evaluate(params, step)` runs in the evaluator thread, one job at a time in the order
    submitted; results come back, in that order, through `ready()` (non-blocking) and
    `finish()` (waits for the outstanding jobs, with a timeout). An exception fails the run.
    """

    _DONE = object()

    def __init__(self, evaluate: Callable[[Any, int], Any], lifetime: Lifetime) -> None:
        self._evaluate = evaluate
        self._lifetime = lifetime
        self._jobs: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._submitted = 0
        self._completed = 0
        self._thread = start_thread("evaluator", self._run, lifetime)

    def _run(self) -> None:
        while not self._lifetime.should_stop():
            try:
                job = self._jobs.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if job is self._DONE:
                return
            params, step = job
            self._results.put((step, params, self._evaluate(params, step)))
            self._completed += 1

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def submit(self, params: Any, step: int) -> None:
        self._submitted += 1
        self._jobs.put((params, step))

    @property
    def outstanding(self) -> int:
        """Submitted evaluations that have not finished."""
        return self._submitted - self._completed

    def ready(self) -> list[tuple[int, Any, Any]]:
        """(step, params, result) of every evaluation finished so far."""
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def finish(self, timeout_s: float) -> list[tuple[int, Any, Any]]:
        """Wait for the submitted jobs, giving each up to `timeout_s` seconds (the clock
        restarts whenever one finishes); returns the results. Jobs still running after that
        stay `outstanding`; a failure or stop of the run ends the wait at once."""
        self._jobs.put(self._DONE)
        completed, deadline = self._completed, time.monotonic() + timeout_s
        while self._thread.is_alive() and not self._lifetime.should_stop():
            if self._completed != completed:
                completed, deadline = self._completed, time.monotonic() + timeout_s
            if time.monotonic() > deadline:
                break
            self._thread.join(POLL_S)
        return self.ready()
