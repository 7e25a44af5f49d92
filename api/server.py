"""Running the API under uvicorn inside our own event loop and signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator

import uvicorn

from api.app import create_app
from api.limits import MAX_BODY_BYTES
from projector.settings import Settings

# gc.set_threshold: allocations between young collections (default 700), young
# collections per middle one (10), middle ones before a full one is considered (10).
# Young collections every 2,000 allocations rather than 10,000: the same collection time in
# all (bench_subscriptions: 0.43-0.49 s young, 0.55-0.70 s middle, against 0.44 and 0.72),
# in pauses a quarter as long (longest middle collection 26-37 ms instead of 95-132).
GC_THRESHOLDS = (2_000, 10, 100)


class _Server(uvicorn.Server):
    # The caller owns SIGINT/SIGTERM (it stops the workers and child servers
    # too); uvicorn must not install its own handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(settings: Settings, stopping: asyncio.Event,
                    started: asyncio.Event | None = None) -> None:
    """Serve until ``stopping`` is set, then shut down gracefully."""
    # WebSocket: a ping every 20 s, a peer silent 20 s after one is dropped (the
    # protocol keep-alives of api.protocols do not detect a dead peer); a client
    # message is at most MAX_BODY_BYTES, like an HTTP body.
    config = uvicorn.Config(create_app(settings), host=settings.api_host, port=settings.api_port,
                            log_level=settings.log_level.lower(), access_log=False,
                            lifespan="on", ws_ping_interval=20, ws_ping_timeout=20,
                            ws_max_size=MAX_BODY_BYTES)
    server = _Server(config)

    async def watch() -> None:
        await stopping.wait()
        server.should_exit = True

    async def announce() -> None:
        # uvicorn exposes `started` as a plain flag, not an event.
        while not server.started and not server.should_exit:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if server.started:
            # What exists now (modules, the schema, pools) lives as long as the
            # process: the cyclic GC need not walk it again in every full
            # collection, a pause that delays every subscription's frames.
            gc.freeze()
            # Subscriptions are long-lived objects in the thousands: with the
            # default thresholds, full collections came every few seconds and
            # each stopped the event loop for up to seconds (10,000 idle
            # subscriptions; bench_subscriptions prints the pauses). Young
            # garbage is still collected often; what lives on is walked rarely.
            gc.set_threshold(*GC_THRESHOLDS)
        if started is not None and server.started:
            started.set()

    watcher = asyncio.create_task(watch())
    announcer = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        for task in (watcher, announcer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
