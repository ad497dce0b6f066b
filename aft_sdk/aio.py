"""The sync bridge and structured concurrency helpers every layer uses.

- :func:`run_sync` runs a coroutine from blocking code on one long-lived event loop
  thread (clients bound to a loop are reused; Jupyter works). Ctrl-C (or any exception
  in the caller) cancels the coroutine, so no paid API calls go on in the background.
- :func:`gather_all` awaits many coroutines; when one raises or the caller is
  cancelled, the rest are cancelled and awaited before the error propagates.
- :class:`Channel` carries items from another thread or loop to an async consumer;
  :func:`iterate_sync` iterates an async stream from blocking code; :func:`within` is
  the one deadline helper.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

from aft_sdk.errors import ConfigError

T = TypeVar("T")


class _LoopThread:
    """One event loop in a daemon thread that runs every sync twin call."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                cls._loop = asyncio.new_event_loop()
                cls._thread = threading.Thread(
                    target=cls._loop.run_forever, name="aft-sdk-sync", daemon=True
                )
                cls._thread.start()
            return cls._loop

    @classmethod
    def on_loop_thread(cls) -> bool:
        return cls._thread is not None and threading.current_thread() is cls._thread


def submit(coro: Coroutine[Any, Any, T],
           context: contextvars.Context | None = None) -> concurrent.futures.Future[T]:
    """Schedules ``coro`` on aft-sdk's loop thread; cancel the future to cancel it.

    ``context`` runs it in the caller's context variables (LangGraph's config and stream
    writer, when a sync node runs async code); by default it gets the loop's own.

    Raises:
        ConfigError: Called from aft-sdk's loop thread itself (see :func:`run_sync`).
    """
    if _LoopThread.on_loop_thread():
        coro.close()
        raise ConfigError(
            "a blocking aft-sdk method (invoke, generate_sync, run_batch, ...) was called "
            "from a coroutine on aft-sdk's event loop, where it would wait for itself "
            "forever: await its async twin instead (ainvoke, generate, arun_batch, ...)"
        )
    loop = _LoopThread.loop()
    if context is None:
        return asyncio.run_coroutine_threadsafe(coro, loop)
    fut: concurrent.futures.Future[T] = concurrent.futures.Future()

    def start() -> None:
        if not fut.set_running_or_notify_cancel():  # cancelled before it started
            coro.close()
            return
        task = loop.create_task(coro, context=context)

        def settle(t: asyncio.Task[T]) -> None:
            if t.cancelled():
                fut.set_exception(concurrent.futures.CancelledError())
            elif t.exception() is not None:
                fut.set_exception(t.exception())  # type: ignore[arg-type]
            else:
                fut.set_result(t.result())

        task.add_done_callback(settle)
        _tasks[fut] = task

    loop.call_soon_threadsafe(start)
    return fut


#: Tasks started with a caller's context, by their future (to cancel them from it).
_tasks: dict[concurrent.futures.Future[Any], asyncio.Task[Any]] = {}


def _cancel(fut: concurrent.futures.Future[Any]) -> None:
    task = _tasks.pop(fut, None)
    if task is not None:
        _LoopThread.loop().call_soon_threadsafe(task.cancel)
    else:
        fut.cancel()


def run_sync(coro: Coroutine[Any, Any, T], context: contextvars.Context | None = None) -> T:
    """Runs a coroutine to completion from synchronous code and returns its result.

    On ``KeyboardInterrupt`` (or any other exception while waiting) the coroutine is
    cancelled and given a moment to unwind before the exception propagates. ``context``:
    see :func:`submit`.

    Raises:
        ConfigError: Called from code already running on aft-sdk's loop thread (a
            sync twin inside a coroutine, which would wait for itself forever).
    """
    fut = submit(coro, context)
    try:
        return fut.result()
    except BaseException:
        _cancel(fut)
        try:  # let the task run its cancellation (close connections, stop writers)
            fut.result(timeout=5)
        except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError, Exception):
            pass
        raise
    finally:
        _tasks.pop(fut, None)


async def gather_all(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Like ``asyncio.gather``, but an error or a cancellation cancels the siblings.

    The first exception propagates after every other task has been cancelled and has
    finished unwinding; results come back in order otherwise.
    """
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class Channel:
    """Hands items from another thread or event loop to one consumer on this loop.

    The one bridge for producers that run elsewhere (a llama.cpp generation thread, the
    vLLM engine's loop): they call :meth:`put`, :meth:`fail` and :meth:`end` from any
    thread; the consumer iterates with ``async for`` and gets the producer's error
    raised where it iterates. Create it on the consumer's loop.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def _send(self, item: Any) -> None:
        if not self._loop.is_closed():  # the consumer's loop may be gone at shutdown
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def put(self, item: Any) -> None:
        self._send(item)

    def fail(self, error: BaseException) -> None:
        self._send(_Failed(error))

    def end(self) -> None:
        self._send(_END)

    async def __aiter__(self) -> AsyncIterator[Any]:
        while (item := await self._queue.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item


def iterate_sync(stream: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """Iterates an async stream from blocking code, on aft-sdk's loop thread.

    Items arrive as they are produced; an error in the stream is raised here; leaving
    the loop early (or Ctrl-C while waiting) cancels the stream.
    """
    q: queue.Queue[Any] = queue.Queue()

    async def pump() -> None:
        try:
            async for item in stream():
                q.put(item)
        except BaseException as e:
            q.put(_Failed(e))
        finally:
            q.put(_END)

    running = submit(pump())
    try:
        while (item := q.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        running.cancel()


async def within(aw: Awaitable[T], seconds: float | None,
                 error: Callable[[], BaseException]) -> T:
    """Awaits ``aw`` in this task for at most ``seconds`` (``None``: no bound), then
    raises ``error()`` from the timeout.

    ``asyncio.timeout``, never ``wait_for``: an async generator's ``__anext__`` must not
    run in a task of its own, or closing the generator later fails ("already running").
    """
    if seconds is None:
        return await aw
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError as e:
        raise error() from e


async def aclose_on_their_loops(closers: list[tuple[Any, Callable[[], Awaitable[Any]]]]) -> None:
    """Closes each resource on the event loop it was made on (HTTP clients bind to one):
    this loop's here, another running loop's there (up to 5 s), and none of a loop
    already closed, whose connections ended with it (closing them again raises on
    Python 3.12+, as after uvicorn's own loop ends)."""
    current = asyncio.get_running_loop()
    for loop, close in closers:
        if loop is current:
            await close()
        elif not loop.is_closed() and loop.is_running():
            done = asyncio.run_coroutine_threadsafe(close(), loop)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.wrap_future(done), timeout=5)
