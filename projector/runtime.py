"""Running async services from a CLI command with orderly signal handling."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop when it is installed (it comes with
    uvicorn[standard]), else on asyncio's own loop, as uvicorn's ``loop="auto"`` does.
    The benchmarks measure the services on uvloop; so must they run."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it on Linux/macOS
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run ``main(stopping)``; SIGINT/SIGTERM set ``stopping`` (twice: exit now)."""

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()

        def on_signal() -> None:
            if stopping.is_set():
                raise SystemExit(130)
            stopping.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        return await main(stopping)

    return run(runner())


async def gather_or_cancel(*coros: Coroutine[Any, Any, T]) -> list[T]:
    """Await all of ``coros`` at once; if one fails, cancel the others (a transaction
    in flight then rolls back), wait for them, and raise."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
