"""How the CLI runs its services: the event loop, and gathering transactions."""

from __future__ import annotations

import asyncio

import pytest

from projector import runtime


def test_the_services_run_on_uvloop() -> None:
    # The benchmarks measure the API and the projector on uvloop; `projector run`,
    # `serve`, `dev` and `rebuild` must run there too, not on asyncio's own loop.
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert runtime.run(loop_module()).startswith("uvloop")


async def test_gather_or_cancel_cancels_the_others_when_one_fails() -> None:
    cancelled = asyncio.Event()

    async def slow() -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    async def failing() -> int:
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await runtime.gather_or_cancel(slow(), failing())
    assert cancelled.is_set()
