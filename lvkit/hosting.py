"""Hosted capacity: the workers that run one hosted model version's DetectAnomalies.

An **inference unit** is one model worker. :class:`ModelPool` hosts a version with
``MinInferenceUnits`` worker threads that share one loaded backend (torch releases the GIL
while it computes, so threads run in parallel), grows up to ``MaxInferenceUnits`` while
requests wait, and shrinks back after ``idle_timeout`` seconds without work. Requests wait in
one bounded queue per hosted version; when it is full the answer is ThrottlingException (429)
with a Retry-After estimated from the recent service time, never unbounded memory or a hang.

Dynamic batching: a worker that picks up work takes every request already waiting (up to
``max_batch``) and, when the backend has ``detect_many`` (:class:`~lvkit.backends.BatchBackend`),
runs them as one batch; other backends run them one by one. Nothing waits for a batch to
fill: at low load a request runs alone, under load batches form by themselves.

:class:`InlinePool` is the in-process form (``lvkit.client()``): the caller's thread is the
worker, nothing is queued and nothing is throttled.

Imports ``lvkit.errors`` and ``lvkit.backends`` only.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lvkit.errors import (
    ConflictException,
    InternalServerException,
    LookoutVisionError,
    ServiceQuotaExceededException,
    ThrottlingException,
    redact_paths,
)

if TYPE_CHECKING:
    from lvkit.backends import Backend
    from lvkit.shapes import ContentType, DetectAnomalyResult

__all__ = ["HostingOptions", "InlinePool", "ModelPool", "Pool", "UnitQuota", "default_max_inference_units"]


@dataclass(frozen=True, slots=True)
class HostingOptions:
    """How a server hosts each model version.

    Parameters
    ----------
    max_queue : int, default 64
        Requests that may wait for a worker, per hosted version; one more is throttled (429).
    max_batch : int, default 8
        The most requests one worker runs as one ``detect_many`` batch.
    idle_timeout : float, default 30.0
        Seconds without work after which a worker above ``MinInferenceUnits`` stops.
    """

    max_queue: int = 64
    max_batch: int = 8
    idle_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_queue < 0 or self.max_batch < 1 or self.idle_timeout <= 0:
            raise ValueError(f"expected max_queue >= 0, max_batch >= 1, idle_timeout > 0, got {self}")


def _internal(exc: BaseException) -> LookoutVisionError:
    if isinstance(exc, LookoutVisionError):
        return exc
    error = InternalServerException(redact_paths(f"the model failed on this image: {type(exc).__name__}: {exc}"))
    error.__cause__ = exc
    return error


class InlinePool:
    """Runs each request in the caller's thread; counts in-flight requests so close() can drain.

    Examples
    --------
    >>> from lvkit.shapes import DetectAnomalyResult
    >>> class Always:
    ...     def detect(self, body, content_type):
    ...         return DetectAnomalyResult(is_anomalous=False, confidence=0.9)
    >>> pool = InlinePool(Always())
    >>> pool.submit(b"...", "image/png").result().confidence
    0.9
    >>> pool.close()
    """

    def __init__(self, backend: Backend, *, name: str = "model", resource_id: str = "") -> None:
        self.backend = backend
        self.name = name
        self.resource_id = resource_id
        self._inflight = 0
        self._idle = threading.Condition()
        self._closing = False

    def submit(self, body: bytes, content_type: ContentType) -> Future[DetectAnomalyResult]:
        with self._idle:
            if self._closing:
                raise ConflictException(f"model {self.name} is stopping", resource_id=self.resource_id,
                                        resource_type="MODEL")
            self._inflight += 1
        future: Future[DetectAnomalyResult] = Future()
        try:
            future.set_result(self.backend.detect(body, content_type))
        except Exception as exc:
            future.set_exception(_internal(exc))
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()
        return future

    def stats(self) -> dict[str, Any]:
        """In-flight requests (the callers' threads are the workers)."""
        with self._idle:
            return {"inflight": self._inflight}

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests and wait for those in flight."""
        with self._idle:
            self._closing = True
            self._idle.wait_for(lambda: self._inflight == 0, timeout)


class ModelPool:
    """Worker threads, a bounded queue and dynamic batching for one hosted model version.

    Parameters
    ----------
    backend : Backend
        The loaded model, shared by the workers.
    min_units : int, default 1
        Workers kept at all times (MinInferenceUnits).
    max_units : int or None
        Workers allowed under load (MaxInferenceUnits); None means ``min_units``.
    options : HostingOptions, optional
        Queue size, batch size, idle timeout.
    name : str
        For thread names and messages, e.g. ``"demo/1"``.
    resource_id : str
        The model ARN, for the errors' ResourceId.

    Examples
    --------
    >>> from lvkit.shapes import DetectAnomalyResult
    >>> class Always:
    ...     def detect(self, body, content_type):
    ...         return DetectAnomalyResult(is_anomalous=True, confidence=0.7)
    >>> pool = ModelPool(Always(), min_units=2, max_units=4, name="demo/1")
    >>> [f.result().is_anomalous for f in [pool.submit(b"x", "image/png") for _ in range(5)]]
    [True, True, True, True, True]
    >>> 2 <= pool.workers <= 4  # a burst of 5 may have added units
    True
    >>> pool.close()
    >>> pool.workers
    0
    """

    def __init__(self, backend: Backend, *, min_units: int = 1, max_units: int | None = None,
                 options: HostingOptions | None = None, name: str = "model", resource_id: str = "") -> None:
        self.backend = backend
        self.min_units = min_units
        self.max_units = max(min_units, max_units or min_units)
        self.options = options or HostingOptions()
        self.name = name
        self.resource_id = resource_id
        self._queue: deque[tuple[bytes, ContentType, Future[DetectAnomalyResult]]] = deque()
        self._cond = threading.Condition()
        self._threads: set[threading.Thread] = set()
        self._busy = 0  # workers running a batch
        self._closing = False
        self._seconds_per_item = 0.0  # moving average, for Retry-After
        self.served = 0
        self.batches = 0
        try:
            with self._cond:
                for _ in range(min_units):
                    self._spawn()
        except BaseException:  # the host refused a thread: stop those we started, leak nothing
            self.close(timeout=5.0)
            raise

    # -- state ------------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        """Worker threads alive now (inference units in use)."""
        with self._cond:
            return len(self._threads)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def stats(self) -> dict[str, Any]:
        """Workers, busy workers, queued requests, served requests and batches so far."""
        with self._cond:
            return {"workers": len(self._threads), "busy": self._busy, "queued": len(self._queue),
                    "served": self.served, "batches": self.batches}

    # -- requests ---------------------------------------------------------------------------
    def submit(self, body: bytes, content_type: ContentType) -> Future[DetectAnomalyResult]:
        """Queue one request; its future resolves to the result or the API error.

        Raises
        ------
        ThrottlingException
            The queue holds ``max_queue`` requests already.
        ConflictException
            The pool is closing (StopModel in progress).
        """
        future: Future[DetectAnomalyResult] = Future()
        with self._cond:
            if self._closing:
                raise ConflictException(f"model {self.name} is stopping", resource_id=self.resource_id,
                                        resource_type="MODEL")
            # requests that no free worker, and no worker we may still add, will take at once
            waiting = len(self._queue) + self._busy - self.max_units
            if waiting >= self.options.max_queue:
                raise ThrottlingException(
                    f"model {self.name} is busy: {len(self._queue)} requests wait for its "
                    f"{len(self._threads)} inference unit(s); retry later",
                    retry_after_seconds=self._retry_after(), service_code="lookoutvision")
            self._queue.append((body, content_type, future))
            if len(self._queue) > len(self._threads) - self._busy and len(self._threads) < self.max_units:
                try:
                    self._spawn()
                except RuntimeError:  # the host refused another thread: the running workers take it
                    if not self._threads:
                        self._queue.pop()
                        raise
            self._cond.notify()
        return future

    def _retry_after(self) -> int:
        per_worker = len(self._queue) * self._seconds_per_item / max(1, len(self._threads))
        return int(min(60, max(1, math.ceil(per_worker))))

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued and running ones, stop the workers (StopModel)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            threads = list(self._threads)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # -- workers ----------------------------------------------------------------------------
    def _spawn(self) -> None:  # with self._cond held
        thread = threading.Thread(target=self._work, name=f"lvkit-unit-{self.name}", daemon=True)
        self._threads.add(thread)
        try:
            thread.start()
        except BaseException:
            self._threads.discard(thread)
            raise

    def _take(self) -> list[tuple[bytes, ContentType, Future[DetectAnomalyResult]]] | None:
        """The next batch, or None when this worker should stop."""
        me = threading.current_thread()
        with self._cond:
            while not self._queue:
                if self._closing:
                    self._threads.discard(me)
                    return None
                woken = self._cond.wait(self.options.idle_timeout)
                if not woken and not self._queue and len(self._threads) > self.min_units:
                    self._threads.discard(me)
                    return None
            size = self.options.max_batch if hasattr(self.backend, "detect_many") else 1
            batch: list[tuple[bytes, ContentType, Future[DetectAnomalyResult]]] = []
            while self._queue and len(batch) < size:
                item = self._queue.popleft()
                if item[2].set_running_or_notify_cancel():  # False: the caller went away
                    batch.append(item)
            self._busy += 1
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            start = time.perf_counter()
            try:
                results = self._run(batch)
            finally:
                elapsed = time.perf_counter() - start
                with self._cond:
                    self._busy -= 1
                    if batch:
                        per_item = elapsed / len(batch)
                        avg = self._seconds_per_item
                        self._seconds_per_item = per_item if avg == 0 else 0.8 * avg + 0.2 * per_item
                        self.served += len(batch)
                        self.batches += 1
            for (_, _, future), result in zip(batch, results):
                if isinstance(result, BaseException):
                    future.set_exception(_internal(result))
                else:
                    future.set_result(result)

    def _run(self, batch: list[tuple[bytes, ContentType, Future[DetectAnomalyResult]]]
             ) -> list[DetectAnomalyResult | BaseException]:
        backend = self.backend  # read once: attach_calibration may swap it
        if len(batch) > 1 and hasattr(backend, "detect_many"):
            try:
                results = list(backend.detect_many([(body, ct) for body, ct, _ in batch]))
                if len(results) == len(batch):
                    return results
                error: BaseException = RuntimeError(
                    f"detect_many returned {len(results)} results for {len(batch)} images")
            except Exception as exc:
                error = exc
            return [error] * len(batch)
        out: list[DetectAnomalyResult | BaseException] = []
        for body, content_type, _ in batch:
            try:
                out.append(backend.detect(body, content_type))
            except Exception as exc:
                out.append(exc)
        return out


Pool = InlinePool | ModelPool


def default_max_inference_units() -> int:
    """The default inference-unit quota of one serving process: 4 per core, at least 8."""
    return max(8, 4 * (os.cpu_count() or 1))


class UnitQuota:
    """Inference units (worker threads) reserved per hosted version, against one limit.

    Examples
    --------
    >>> quota = UnitQuota(4)
    >>> quota.reserve(("p", 1), 3, arn="arn:...:model/p/1", operation="StartModel") is None
    True
    >>> try:
    ...     quota.reserve(("p", 2), 2, arn="arn:...:model/p/2", operation="StartModel")
    ... except ServiceQuotaExceededException as exc:
    ...     print(exc.http_status, exc.message[:65])
    402 hosting 2 inference unit(s) would exceed this server's quota of 4
    >>> quota.release(("p", 1)); quota.reserved
    {}
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the inference-unit quota must be >= 1, got {limit}")
        self.limit = limit
        self._units: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()  # a leaf: nothing else is taken while it is held

    @property
    def reserved(self) -> dict[tuple[str, int], int]:
        """Units reserved now, per (project, version)."""
        with self._lock:
            return dict(self._units)

    def reserve(self, key: tuple[str, int], units: int, *, arn: str, operation: str) -> int | None:
        """Reserve ``units`` for ``key`` (replacing its reservation); returns the previous one.

        Raises ServiceQuotaExceededException (402, naming ``arn``) beyond the limit.
        """
        with self._lock:
            others = sum(n for k, n in self._units.items() if k != key)
            if units > self.limit - others:
                raise ServiceQuotaExceededException(
                    f"hosting {units} inference unit(s) would exceed this server's quota of {self.limit} "
                    f"({others} in use by other model versions); ask for fewer or stop another model",
                    quota_code="inference-units", service_code="lookoutvision", resource_id=arn,
                    resource_type="MODEL", operation_name=operation)
            previous = self._units.get(key)
            self._units[key] = units
            return previous

    def release(self, key: tuple[str, int], previous: int | None = None) -> None:
        """Give back ``key``'s reservation (or put ``previous`` back)."""
        with self._lock:
            if previous is None:
                self._units.pop(key, None)
            else:
                self._units[key] = previous
