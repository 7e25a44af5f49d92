"""The change feed: one LISTEN connection per API process, one read per changed table.

The engine sends one ``NOTIFY projector_changes`` per committed batch, naming
the tables it changed (never row data). The feed LISTENs on one connection;
a notification, or a burst of them (coalesced while a read is running),
wakes one *round*: for each changed table that anyone watches, one statement
reads the rows whose ``updated_seq`` is above the last one delivered (a page
of FEED_PAGE_ROWS; more pages if need be), and :meth:`Registry.dispatch`
hands each row to the subscribers it matches, in memory. A table nobody
watches costs one ``max(updated_seq)`` instead. So the database cost of a
change does not depend on the number of subscribers: one statement per
changed table, one round trip each, on a connection of the feed's own.

No silent loss:

- The cursor (highest sequence read, per table) survives the LISTEN
  connection: after it drops, the feed reconnects with backoff, LISTENs
  again, then reads every table from its cursor. A notification lost meanwhile
  only delays a change.
- Rows of transactions that commit out of sequence order are found through
  the snapshot's running transactions (``api.cursor``).
- A rebuild replaces a table by renaming (``swapped`` in the notification; the
  feed checks the tables' oids every round, so it also notices on its own).
  The new rows' sequences are another history, so the feed cannot catch up by
  sequence: it starts over at the new table's highest sequence and re-reads
  the rows subscribers watch (by key or owner; all rows of a small table),
  which they receive as a change. A subscriber watching every row of a large
  table gets a RESYNC_REQUIRED error instead, never a silent gap.

Delivery: each subscriber receives the latest state of every row it matches
at least once after each change. Intermediate states may be skipped: the
feed reads a row's current state, and a slow subscriber's buffer keeps only
the newest state per row (``api.mailbox``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

from api.cursor import TableCursor, TxSnapshot, established
from api.fanout import Change, Registry, ResyncRequired
from api.metrics import ApiMetrics
from api.sql.changes import FEED_PAGE_ROWS, FEED_TABLES, HEAD, FeedTable, snapshot_sql
from projector.db import create_pool, is_transient
from projector.engine import NOTIFY_CHANNEL
from projector.retry import Backoff

log = logging.getLogger("api.feed")

# Without a notification for this long, the LISTEN connection is probed (a
# half-open TCP connection delivers nothing and reports no error).
PROBE_IDLE_S = 10.0
PROBE_TIMEOUT_S = 5.0
# On start, how long to wait for transactions already running to finish
# before assuming their rows could lie anywhere (see api.cursor.established).
ESTABLISH_WAIT_S = 2.0
READ_TIMEOUT_MS = 10_000


class ChangeFeed:
    """Reads changed rows on notification and dispatches them to ``registry``.

    Parameters: ``url`` the PostgreSQL the engine writes and notifies (LISTEN
    needs the primary: notifications do not reach replicas, so the feed reads
    there too); ``registry`` the subscribers; ``tables`` the watchable tables;
    ``metrics`` optional. :meth:`start` returns once the feed is listening and
    its cursors are set: changes committed after that are delivered.
    """

    def __init__(self, url: str, registry: Registry, *, tables: Mapping[str, FeedTable] = FEED_TABLES,
                 metrics: ApiMetrics | None = None) -> None:
        self.url = url
        self.registry = registry
        self.tables = dict(tables)
        self.metrics = metrics
        self._names = tuple(self.tables)
        self._snapshot_sql = snapshot_sql(self._names)
        self._cursors: dict[str, TableCursor] = {}
        # The latest snapshot any read reported (which transactions were running then).
        self._latest = TxSnapshot(frozenset())
        self._reader: asyncpg.Pool | None = None
        self._dirty: set[str] = set()
        self._arrived: float | None = None
        self._wake = asyncio.Event()
        self._listening = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.rounds = 0
        self.reconnects = 0

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        self._reader = await create_pool(self.url, min_size=1, max_size=1,
                                         server_settings={
                                             "application_name": "projector-api-feed-reader",
                                             "statement_timeout": str(READ_TIMEOUT_MS),
                                             "default_transaction_read_only": "on",
                                             # Generic plans (planning was half the time of
                                             # a round's reads) that cannot scan a table: one
                                             # made while a table was empty walks the
                                             # updated_seq index from $1 (tests/
                                             # test_subscriptions_feed.py). A swap's re-read
                                             # plans with its arguments (_swapped).
                                             "plan_cache_mode": "auto",
                                             "enable_seqscan": "off"})
        try:
            listen = asyncio.create_task(self._listen_routine(), name="feed-listen")
            self._tasks.append(listen)
            # LISTEN before the cursors: a change committed in between is then
            # both above the cursors and notified.
            waiting = asyncio.create_task(self._listening.wait())
            await asyncio.wait({listen, waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if listen.done():
                listen.result()  # raises what stopped it
            await self._establish()
            self._tasks.append(asyncio.create_task(self._read_routine(), name="feed-read"))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Shutdown: 1. stop listening and reading (a round in flight is abandoned;
        nobody is left to deliver to); 2. close the connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("change feed: %s had failed", task.get_name())
        self._tasks.clear()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    # -- notifications ----------------------------------------------------------

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            note = orjson.loads(payload)
            tables = {t for t in note["tables"] if t in self.tables}
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("unreadable %s payload %r: re-reading every table", channel, payload[:200])
            tables = set(self._names)
        self._mark(tables)

    def _mark(self, tables: set[str]) -> None:
        if not tables:
            return
        self._dirty |= tables
        if self._arrived is None:
            self._arrived = time.monotonic()
        self._wake.set()

    async def _listen_routine(self) -> None:
        backoff = Backoff(base_s=0.05, cap_s=5.0)
        first = True
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.url, server_settings={
                    "application_name": "projector-api-feed"})
                lost = asyncio.Event()
                conn.add_termination_listener(functools.partial(_set, lost))
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                if not first:
                    # Notifications sent while we were away are gone: read every
                    # table from its cursor.
                    self.reconnects += 1
                    if self.metrics:
                        self.metrics.feed_reconnects.inc()
                    log.info("change feed listening again; catching up from the cursors")
                    self._mark(set(self._names))
                first = False
                self._listening.set()
                backoff.reset()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), PROBE_IDLE_S)
                        break
                    await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_S)
                log.warning("change feed: LISTEN connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if first and not is_transient(exc):
                    raise
                delay = backoff.next_delay()
                log.warning("change feed: LISTEN connection failed (%s: %s); retrying in %.2f s",
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)

    # -- reads ---------------------------------------------------------------------

    async def _read_routine(self) -> None:
        backoff = Backoff(base_s=0.05, cap_s=5.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            arrived, self._arrived = self._arrived or time.monotonic(), None
            try:
                started = time.perf_counter()
                await self._round(dirty, arrived)
                if self.metrics:
                    self.metrics.feed_read_seconds.observe(time.perf_counter() - started)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep what was to be read; the cursors moved only for what was dispatched.
                self._dirty |= dirty
                self._arrived = min(arrived, self._arrived or arrived)
                delay = backoff.next_delay()
                level = logging.WARNING if is_transient(exc) else logging.ERROR
                log.log(level, "change feed: read failed (%s: %s); retrying in %.2f s",
                        type(exc).__name__, exc, delay, exc_info=not is_transient(exc))
                await asyncio.sleep(delay)
                self._wake.set()

    async def _round(self, dirty: set[str], arrived: float) -> None:
        assert self._reader is not None, "ChangeFeed._round() before start()"
        self.rounds += 1
        if self.metrics:
            self.metrics.feed_rounds.inc()
        async with self._reader.acquire() as conn:
            for name in self._names:
                if name in dirty:
                    await self._read(conn, self.tables[name], self._cursors[name], arrived)

    async def _read(self, conn: asyncpg.Connection, spec: FeedTable, cursor: TableCursor,
                    arrived: float) -> None:
        """Read the table's changes page by page, each page one statement in its own
        snapshot, and dispatch them; a table nobody watches only moves its cursor."""
        while True:
            plan = cursor.plan(self._latest)
            if not self.registry.interested(spec.name):
                head = await conn.fetchrow(spec.newest, plan.after)
                seen = self._seen(head)
                if head["_oid"] != cursor.oid:
                    await self._swapped(conn, spec, cursor, head["_oid"], arrived)
                    return
                cursor.advance(plan, head["_newest"], seen)
                return
            rows = await conn.fetch(spec.since, plan.low, plan.after, list(plan.xids),
                                   list(plan.highs), FEED_PAGE_ROWS)
            seen = self._seen(rows[0])
            if rows[0]["_oid"] != cursor.oid:
                await self._swapped(conn, spec, cursor, rows[0]["_oid"], arrived)
                return
            if rows[0]["updated_seq"] is None:  # the head alone: nothing changed
                rows = []
            if rows:
                key = spec.key
                changes = []
                for r in rows:
                    row = dict(r)
                    for column in HEAD:
                        del row[column]
                    changes.append(Change(spec.name, row[key], row, row["updated_seq"], arrived))
                self.registry.dispatch(changes)
                if self.metrics:
                    self.metrics.feed_rows.labels(spec.name).inc(len(rows))
            if cursor.advance(plan, rows[-1]["updated_seq"] if rows else None, seen):
                # A transaction seen running has finished: look for its rows in the
                # next round (not in a loop here, which a busy database would keep going).
                self._mark({spec.name})
            if len(rows) < FEED_PAGE_ROWS:
                return

    def _seen(self, head: asyncpg.Record) -> TxSnapshot:
        seen = TxSnapshot.parse(head["_snapshot"], head["_foreign"])
        self._latest = seen
        return seen

    async def _swapped(self, conn: asyncpg.Connection, spec: FeedTable, cursor: TableCursor,
                       oid: int | None, arrived: float) -> None:
        """The table was replaced: re-read what subscribers watch, start over at its top.

        The cursor moves last: should a read fail, the next round sees the old
        oid again and does it all again (subscribers may get a row twice, never none).
        """
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # Rows by key, or by owner: an index each, or every row; let the arguments decide.
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan; "
                               "SET LOCAL enable_seqscan = on")
            await self._resync(conn, spec, cursor, oid, arrived)

    async def _resync(self, conn: asyncpg.Connection, spec: FeedTable, cursor: TableCursor,
                      oid: int | None, arrived: float) -> None:
        top = int(await conn.fetchval(spec.top)) if oid is not None else 0
        if cursor.oid is not None:  # else it did not exist before: nobody watched its rows
            log.info("change feed: %s was swapped (a rebuild); re-reading the watched rows", spec.name)
            if self.metrics:
                self.metrics.feed_resyncs.labels(spec.name).inc()
            self.registry.swapped(spec.name)
            keys, owners, wide = self.registry.watched(spec.name)
            if spec.small:
                await self._reread(conn, spec, arrived, spec.every(after=False), spec.every(after=True), ())
            else:
                for sub in wide:
                    sub.fail(ResyncRequired(
                        f"{spec.name} was rebuilt and replaced: query the current state, then subscribe "
                        "again"), "resync")
                if keys or owners:
                    args: tuple[Any, ...] = (keys, owners) if spec.owner is not None else (keys,)
                    await self._reread(conn, spec, arrived, spec.keyed(owners=True, after=False),
                                       spec.keyed(owners=True, after=True), args)
        cursor.reset(top, oid)

    async def _reread(self, conn: asyncpg.Connection, spec: FeedTable, arrived: float, first: str,
                      after: str, args: tuple[Any, ...]) -> None:
        rows = await conn.fetch(first, *args, FEED_PAGE_ROWS)
        while rows:
            self.registry.dispatch([Change(spec.name, r[spec.key], r, r["updated_seq"], arrived, True, True)
                                    for r in rows])
            if len(rows) < FEED_PAGE_ROWS:
                break
            rows = await conn.fetch(after, *args, rows[-1][spec.key], FEED_PAGE_ROWS)

    async def _establish(self) -> None:
        """Set every cursor at the tables' current top (see api.cursor.established)."""
        assert self._reader is not None, "ChangeFeed._establish() before start()"
        async with self._reader.acquire() as conn:
            first, _, first_tops = await self._tops(conn)
            pending = set(first.running)
            deadline = time.monotonic() + ESTABLISH_WAIT_S
            while pending and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                head = await conn.fetchrow(self._snapshot_sql)
                pending &= TxSnapshot.parse(head["snapshot"], head["foreign"]).running
            if pending:
                log.warning("change feed: %d transaction(s) still running after %.0f s; their rows "
                            "will be looked for when they finish", len(pending), ESTABLISH_WAIT_S)
            second, oids, tops = await self._tops(conn)
        for name in self._names:
            self._cursors[name] = established(first_tops[name], tops[name], oids[name], second, pending)
        self._latest = second

    async def _tops(self, conn: asyncpg.Connection) -> tuple[TxSnapshot, dict[str, int | None],
                                                              dict[str, int]]:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            head = await conn.fetchrow(self._snapshot_sql)
            oids: dict[str, int | None] = dict(zip(self._names, head["oids"], strict=True))
            tops = {name: int(await conn.fetchval(self.tables[name].top)) if oids[name] is not None else 0
                    for name in self._names}
        return TxSnapshot.parse(head["snapshot"], head["foreign"]), oids, tops

    def cursors(self) -> dict[str, int]:
        """The highest sequence read per table (for tests and status)."""
        return {name: c.seq for name, c in self._cursors.items()}


def _set(event: asyncio.Event, *_: object) -> None:
    event.set()
