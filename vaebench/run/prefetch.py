"""Making and staging batch n+1 on a background thread while step n trains.

A hand-written loop hides its input work behind the step: ``tf.data``'s
``prefetch``, a ``DataLoader`` with workers, a ``device_put`` ahead of the
step. The harness must do the same, or its figures include host work the
yardstick does not pay (measured on the keras plugin, ``mlp`` at batch 128:
taking a NumPy batch into TensorFlow on the step's thread cost 7-13% of the
step). The step releases the GIL while it runs, so a producer thread gets
the batch made and converted in that time. One producer keeps the order, so
data streams stay exactly as the core draws them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T, U]):
    """Iterate ``(item, fn(item))`` over ``items``, computed up to ``depth`` items ahead on one thread.

    An exception in ``items`` or ``fn`` is raised in the consumer at the item
    that caused it. :meth:`close` (or leaving a ``with`` block) stops the
    producer without consuming the rest, so a run that stops early leaves no
    thread behind.
    """

    def __init__(self, items: Iterable[T], fn: Callable[[T], U], depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(items), fn), name="vaebench-prefetch", daemon=True)
        self._finished = False
        self._thread.start()

    def _put(self, value: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterator[T], fn: Callable[[T], U]) -> None:
        try:
            for item in items:
                if not self._put((item, fn(item))):
                    return
        except BaseException as error:  # handed to the consumer, raised there at this item
            self._put(_Failure(error))
            return
        self._put(_DONE)

    def __iter__(self) -> Prefetcher[T, U]:
        return self

    def __next__(self) -> tuple[T, U]:
        if self._finished:
            raise StopIteration
        value = self._queue.get()
        if value is _DONE:
            self.close()
            raise StopIteration
        if isinstance(value, _Failure):
            self.close()
            raise value.error
        return value

    def close(self) -> None:
        """Stop the producer and wait for it (it finishes at most the item it is on)."""
        self._finished = True
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Prefetcher[T, U]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
