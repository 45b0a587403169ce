"""A batching scheduler for one Predictor: requests for any adapters that arrive within a short
window run as one mixed-adapter forward.

Each request is rows of texts with one adapter name per row (None: the untuned base). A worker
thread waits up to `max_delay_s` after the oldest waiting request for more rows, then runs up to
`max_batch_rows` rows of waiting requests in one `Predictor.predict` call, however many distinct
adapters they name, and hands each caller its own rows back through a Future. Generation
batches per window too: requests asking for the same `max_new_tokens` share a call, and a
request with `on_piece` gets its rows' text piece by piece while that call runs; its Future's
stop() ends its rows at the next step (the others go on; the call ends once all rows have).

The queue is bounded (`max_queued_rows`); beyond it `submit` raises QueueFull with an estimate
of when to retry. A batch that fails is rerun one request at a time, so a bad request (or
adapter) fails only its own caller. Only the worker thread calls the Predictor, under `lock`;
whoever changes the Predictor's adapters from outside takes the same lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from ia3engine.errors import IA3Error

logger = logging.getLogger(__name__)

RECENT_BATCHES = 256  # rows per batch kept for stats


class QueueFull(IA3Error):
    """The scheduler holds as many rows as it may; try again after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RowsFuture(Future):
    """A request's Future, which its caller may also stop(): queued, it is cancelled (never
    runs); generating (streaming requests), its rows end at the next decoding step and the
    result is the text so far. Either way the Future completes soon, so whatever counts the
    request in flight is released then."""

    def __init__(self):
        super().__init__()
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        self.cancel()  # only while queued; a running request sees stopped() instead

    def stopped(self) -> bool:
        return self._stopped.is_set()


@dataclass
class Request:
    """One caller's rows; `context` is handed to the scheduler's `prepare` hook untouched.

    on_piece(row, text) (generation) gets each row's text as it is generated; `streamed` is
    what each row has been sent, so a rerun after a failed batch does not send it twice."""

    texts: list[str]
    names: list[str | None]
    max_new_tokens: int | None = None
    context: object = None
    on_piece: Callable[[int, str], None] | None = None
    future: RowsFuture = field(default_factory=RowsFuture)
    arrived: float = 0.0  # time.monotonic() when queued
    streamed: dict = field(default_factory=dict)  # row -> text sent to on_piece

    def stream_row(self, row: int) -> Callable[[str], None]:
        """The callback for one run of `row`: it passes on only text beyond what was sent."""
        run = [""]  # this run's text so far

        def piece(text: str) -> None:
            run[0] += text
            sent = self.streamed.get(row, "")
            if len(run[0]) <= len(sent) or not run[0].startswith(sent):
                return
            self.streamed[row] = run[0]
            try:
                self.on_piece(row, run[0][len(sent) :])
            except Exception:  # a caller's callback never fails the batch
                logger.exception("a streaming callback failed; the request's stream stops")
                self.on_piece = None

        return piece

    @property
    def rows(self) -> int:
        return len(self.texts)


@dataclass
class BatchStats:
    """What the scheduler did: forwards run, rows and requests in them, reruns after failures."""

    batches: int = 0  # Predictor.predict calls, reruns included
    rows: int = 0
    requests: int = 0  # requests answered (with results or their own error)
    reruns: int = 0  # failed batches of several requests rerun one request at a time
    rows_per_batch: deque = field(default_factory=lambda: deque(maxlen=RECENT_BATCHES))

    def snapshot(self) -> dict:
        return {
            "batches": self.batches,
            "rows": self.rows,
            "requests": self.requests,
            "reruns": self.reruns,
            "rows_per_batch": list(self.rows_per_batch),
        }


class Batcher:
    """The scheduler of one Predictor (one base model). Thread-safe; `close()` when done."""

    def __init__(
        self,
        predictor,
        *,
        max_batch_rows: int = 32,
        max_delay_s: float = 0.005,
        max_queued_rows: int = 1024,
        prepare=None,
        start: bool = True,
        name: str = "batcher",
    ):
        if max_batch_rows < 1 or max_queued_rows < 1 or max_delay_s < 0:
            raise ValueError("max_batch_rows and max_queued_rows must be >= 1, max_delay_s >= 0")
        self.predictor = predictor
        self.max_batch_rows, self.max_delay_s = int(max_batch_rows), float(max_delay_s)
        self.max_queued_rows = int(max_queued_rows)
        self.prepare = prepare  # called with the batch's requests before each forward
        self.lock = threading.RLock()  # held while the Predictor runs or changes
        self._changed = threading.Condition()
        self._queue: deque[Request] = deque()
        self._queued_rows = 0
        self._closed = False
        self._seconds_per_row = 0.05  # running estimate, for retry-after
        self._stats = BatchStats()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        if start:
            self.start()

    # ---- callers ---------------------------------------------------------------------------
    def submit(
        self,
        texts: list[str],
        names: list[str | None],
        *,
        max_new_tokens: int | None = None,
        context: object = None,
        on_piece: Callable[[int, str], None] | None = None,
    ) -> RowsFuture:
        """Queue one request; the Future's result is its rows' outputs, in order.

        on_piece(row, text), for generation, is called from the worker thread with each new
        piece of a row's text as it is generated (the pieces join to the row's "text"); the
        Future's stop() then ends the request's rows early (its caller went away)."""
        texts, names = list(texts), list(names)
        if len(texts) != len(names):
            raise ValueError(f"{len(texts)} texts but {len(names)} adapter names")
        request = Request(texts, names, max_new_tokens, context, on_piece)
        if not texts:
            request.future.set_result([])
            return request.future
        with self._changed:
            if self._closed:
                raise QueueFull("This model is being unloaded; send the request again.", 1)
            if self._queued_rows + request.rows > self.max_queued_rows:
                raise QueueFull(
                    f"The server is busy: {self._queued_rows} rows are waiting, the most it "
                    f"queues is {self.max_queued_rows}. Retry in a moment.",
                    self._retry_after(),
                )
            request.arrived = time.monotonic()
            self._queue.append(request)
            self._queued_rows += request.rows
            self._changed.notify_all()
        return request.future

    def run(self, texts, names, *, max_new_tokens=None, context=None, timeout=None) -> list:
        """submit() and wait for the outputs (raises the request's own error)."""
        future = self.submit(texts, names, max_new_tokens=max_new_tokens, context=context)
        return future.result(timeout)

    def stats(self) -> dict:
        with self._changed:
            return {**self._stats.snapshot(), "queued_rows": self._queued_rows}

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued_rows(self) -> int:
        with self._changed:
            return self._queued_rows

    def start(self) -> None:
        """Start the worker (a Batcher made with start=False holds requests until then)."""
        if not self._thread.is_alive():
            self._thread.start()

    def close(self, timeout: float | None = 30) -> None:
        """Refuse new requests, answer the queued ones, stop the worker."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ---- the worker ------------------------------------------------------------------------
    def _retry_after(self) -> int:
        return max(1, math.ceil(self._queued_rows * self._seconds_per_row))

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except BaseException as error:  # never leave a caller waiting forever
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                if not isinstance(error, Exception):
                    raise

    def _fits(self, request: Request, first: Request, rows: int) -> bool:
        return request.max_new_tokens == first.max_new_tokens and (
            rows + request.rows <= self.max_batch_rows
        )

    def _ready_rows(self, first: Request) -> int:
        rows = 0
        for request in self._queue:
            if request.max_new_tokens == first.max_new_tokens:
                rows += request.rows
        return rows

    def _next_batch(self) -> list[Request] | None:
        with self._changed:
            while not self._queue:
                if self._closed:
                    return None
                self._changed.wait()
            first = self._queue[0]
            deadline = first.arrived + self.max_delay_s
            while not self._closed and self._ready_rows(first) < self.max_batch_rows:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            batch, rows, kept = [], 0, deque()
            while self._queue:
                request = self._queue.popleft()
                if not batch or self._fits(request, first, rows):
                    batch.append(request)
                    rows += request.rows
                else:
                    kept.append(request)
            self._queue = kept
            self._queued_rows -= rows
        # A caller that cancelled its Future before the batch ran is left out.
        return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def _run(self, batch: list[Request]) -> None:
        if not batch:
            return
        try:
            outputs = self._forward(batch)
        except Exception as error:
            if len(batch) == 1:
                self._answer(batch[0], error=error)
                return
            logger.info(
                "a batch of %d requests failed (%s); rerunning each alone", len(batch), error
            )
            with self._changed:
                self._stats.reruns += 1
            for request in batch:
                try:
                    self._answer(request, outputs=self._forward([request]))
                except Exception as alone:
                    self._answer(request, error=alone)
            return
        start = 0
        for request in batch:
            self._answer(request, outputs=outputs[start : start + request.rows])
            start += request.rows

    def _forward(self, batch: list[Request]) -> list:
        texts = [text for request in batch for text in request.texts]
        names = [name for request in batch for name in request.names]
        began = time.monotonic()
        with self.lock:
            if self.prepare is not None:
                self.prepare(batch)
            kwargs = {}
            if batch[0].max_new_tokens is not None:
                kwargs["max_new_tokens"] = batch[0].max_new_tokens
            streams = self._streams(batch)
            if streams:  # only streaming requests cost the per-step decoding
                kwargs["on_piece"] = streams
                kwargs["should_stop"] = {row: self._stop_of(batch, row) for row in streams}
            outputs = self.predictor.predict(texts, names, **kwargs)
        seconds = time.monotonic() - began
        with self._changed:
            self._stats.batches += 1
            self._stats.rows += len(texts)
            self._stats.rows_per_batch.append(len(texts))
            self._seconds_per_row = 0.8 * self._seconds_per_row + 0.2 * seconds / len(texts)
        if len(outputs) != len(texts):
            raise IA3Error(f"The model answered {len(outputs)} rows for {len(texts)} texts.")
        return outputs

    @staticmethod
    def _streams(batch: list[Request]) -> dict:
        """{row of the batch: callback} for the rows of streaming requests."""
        streams, start = {}, 0
        for request in batch:
            if request.on_piece is not None:
                for row in range(request.rows):
                    streams[start + row] = request.stream_row(row)
            start += request.rows
        return streams

    @staticmethod
    def _stop_of(batch: list[Request], row: int):
        """The stopped() of the request that owns `row` of the batch."""
        for request in batch:
            if row < request.rows:
                return request.future.stopped
            row -= request.rows
        raise IndexError(row)

    def _answer(self, request: Request, *, outputs=None, error=None) -> None:
        with self._changed:
            self._stats.requests += 1
        if error is not None:
            request.future.set_exception(error)
        else:
            request.future.set_result(list(outputs))
