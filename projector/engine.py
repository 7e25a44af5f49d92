"""The projector engine: consume, decode, apply, checkpoint, in one transaction per batch
and projection.

Deciding and doing are apart: ``projector.batch`` sorts a fetched batch into
per-projection work (pure); this module does the I/O: the Kafka consumer, the
transaction, retries, fencing and rebalances.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import operator
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import OffsetAndMetadata

from projector import checkpoints, dead_letters
from projector.align import MAX_WAIT_S, Aligner
from projector.batch import Decoded, ProjectionWork, decode_one, plan_work
from projector.checkpoints import FROM_LOG_START, TP
from projector.db import is_transient, physical_tables
from projector.errors import FencedError, LogTruncatedError
from projector.events import Event, Rejection, RejectReason
from projector.metrics import EngineMetrics
from projector.projection import Positioned, Projection
from projector.retry import Backoff
from projector.runtime import gather_or_cancel
from projector.settings import Settings

log = logging.getLogger("projector.engine")

NOTIFY_CHANNEL = "projector_changes"
_KAFKA_COMMIT_INTERVAL_S = 5.0
# How often the stored checkpoints are compared with the engine's own (see _verify_checkpoints).
_VERIFY_INTERVAL_S = 5.0
_ALIGN_BATCHES = 2  # records the aligner holds before a partition counts as full, in batches
# A batch's transaction lets PostgreSQL keep generic plans where the session plans each
# statement with its arguments (projector.db.WRITER_SETTINGS): planning was a quarter of
# PostgreSQL's time for a live batch of 50 events. Sequential scans are off, so a plan made
# while a table was empty cannot scan it once it has grown; every statement of a batch
# finds its rows by key. Both settings end with the transaction.
BATCH_BEGIN = "BEGIN; SET LOCAL plan_cache_mode = auto; SET LOCAL enable_seqscan = off"

_occurred_at = operator.attrgetter("event.occurred_at")

PosKey = tuple[str, int, int]
"""An event's log position: (topic, partition, offset)."""


def _pos(pe: Positioned) -> PosKey:
    return (pe.topic, pe.partition, pe.offset)


@dataclass(slots=True)
class _Batch:
    """A batch cut, sorted into each projection's work and prepared."""

    records: dict[TP, Sequence[Any]]
    decoded: Decoded
    work: list[ProjectionWork]
    unknown: dict[str, int]
    events: list[list[Positioned]]  # each work's events: the lists its projection prepared


class _ApplyFailed(Exception):
    """A projection raised on a batch applied whole: run it again, isolating."""


# A dead letter's key: (projection, topic, partition, offset).
LetterKey = tuple[str, str, int, int]
DecodeFn = Callable[[bytes | None, bytes | None, Sequence[tuple[str, bytes]]], Event | Rejection]




async def notify_changes(conn: asyncpg.Connection, tables: Iterable[str]) -> None:
    """NOTIFY ``projector_changes`` with the changed tables and the highest sequence this
    transaction drew: ``{"tables": [...], "seq": n}``, never row data (8,000-byte limit).
    A batch's notification rides on its commit instead (``checkpoints.advance_and_commit``)."""
    await conn.execute(checkpoints.NOTIFY_SQL, NOTIFY_CHANNEL, sorted(tables))


def live_lock_key(projection: str) -> int:
    """The advisory lock key guarding a projection's live writes (signed 64-bit)."""
    digest = hashlib.blake2b(f"projector-live:{projection}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _undo(conn: asyncpg.Connection, statement: str) -> None:
    """Roll back what is still open (after an error, or a body that did not commit); a
    broken connection fails here too, and the pool then discards it."""
    if not conn.is_closed() and conn.is_in_transaction():
        with contextlib.suppress(Exception):
            await conn.execute(statement)


@contextlib.asynccontextmanager
async def _savepoint(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A savepoint in a transaction begun by hand: released at the end, rolled back to
    on an error (which is raised again)."""
    await conn.execute("SAVEPOINT isolating")
    try:
        yield
    except BaseException:
        await _undo(conn, "ROLLBACK TO SAVEPOINT isolating")
        raise
    await conn.execute("RELEASE SAVEPOINT isolating")


def event_context(pe: Positioned, projection: str) -> dict[str, object]:
    """The fields every log line about an event carries (JSON logs show them)."""
    e = pe.event
    return {"event_id": e.event_id, "order_id": e.order_id, "correlation_id": e.correlation_id,
            "topic": pe.topic, "partition": pe.partition, "offset": pe.offset,
            "projection": projection}


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Finish the batch in flight before the partitions move: its
        # checkpoints are compare-and-set, so a late commit would be fenced.
        async with self.engine._between_batches():
            self.engine._forget([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self.engine._on_assigned([(tp.topic, tp.partition) for tp in assigned])


class Engine:
    """Runs a set of projections over the order topics.

    Parameters:
        settings: the frozen Settings (bootstrap servers, batch size, timeouts).
        pool: an asyncpg pool on the database that holds the read models.
        projections: the projections to maintain; all share one consumer.
        group_id: Kafka consumer group (partitions shared between instances);
            None assigns every partition of ``topics`` to this instance.
        decode: bytes -> Event | Rejection (default: the schemas/ contract).
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool,
                 projections: Sequence[Projection], *, topics: Sequence[str] | None = None,
                 group_id: str | None = "", decode: DecodeFn | None = None,
                 client_id: str = "projector", metrics: EngineMetrics | None = None,
                 physical: Mapping[str, Mapping[str, str]] | None = None,
                 shadow: bool = False, only: Callable[[TP], bool] | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.projections = tuple(projections)
        self.topics = tuple(topics or settings.topics)
        self.group_id = settings.group_id if group_id == "" else group_id
        if decode is None:
            from projector.contracts import default_decoder
            decode = default_decoder().decode  # the method itself: one call less a record
        self.decode = decode
        self.client_id = client_id
        self.metrics = metrics
        # A shadow engine (a rebuild) writes tables nobody reads yet: it sends
        # no change notifications, publishes no status and takes no live locks.
        self.shadow = shadow
        # Without a group: the partitions to take (all if None); a parallel
        # rebuild gives each of its processes a share.
        self.only = only
        self._physical_override = {k: dict(v) for k, v in (physical or {}).items()}
        self._batch_lock = asyncio.Lock()
        # The batch committing in the background while the next one is prepared.
        self._inflight: asyncio.Task[bool] | None = None
        # The checkpoints it moves to, if it commits (not the batch: freed when done).
        self._inflight_ends: dict[str, dict[TP, int]] = {}
        # Fetched records wait here to be cut into timestamp-ordered batches.
        self._aligner = Aligner(cap=settings.batch_max_events)
        self._last_take = 0.0
        self._fetched = asyncio.Event()  # the fetch routine added records (or found none)
        self._room = asyncio.Event()  # a batch was taken: full partitions may have room
        self._idle = False  # the last fetch found nothing: cut a batch of what there is
        self._consumer: AIOKafkaConsumer | None = None
        self._physical: dict[str, dict[str, str]] = {}
        # projection -> {tp: next offset we expect to find stored}
        self.positions: dict[str, dict[TP, int]] = {p.name: {} for p in self.projections}
        self.refused: dict[TP, str] = {}
        self.events_applied = 0
        self.batches_committed = 0
        self.unknown_skipped = 0
        self.fenced = 0
        self.paused: set[str] = set()
        self._accepted_gaps: dict[TP, tuple[int, int]] = {}
        self._log_starts: dict[TP, int] = {}
        self.applied_by: dict[str, int] = {p.name: 0 for p in self.projections}
        self.last_event_at: dict[str, datetime] = {}
        self.ready_lag = settings.ready_lag
        # Recent batch commits (seconds, events): bounded, for status and benchmarks.
        self.commit_log: deque[tuple[float, int]] = deque(maxlen=10_000)
        self._last_kafka_commit = 0.0
        self.ready = asyncio.Event()
        # Where log start offsets come from; a test may replace it to stand in
        # for retention on a broker that cannot delete records.
        self.log_starts: Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]] | None = None

    # -- lifecycle ---------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set; then shut down in order."""
        await self._load_physical()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.require_kafka(),
            group_id=self.group_id,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="none",  # we always seek; out of range must be loud
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.settings.session_timeout_ms // 3),
            max_poll_interval_ms=300_000,
            # Chunks from every partition at once (the aligner needs all partitions'
            # oldest records, not one big chunk) of ~800 records: fewer fetch round
            # trips in a backlog (engine bench, 400,000 events: 64 KB 19,200 events/s,
            # 256 KB 20,700, 1 MB 19,600).
            max_partition_fetch_bytes=256 * 1024,
            fetch_max_bytes=8 * 1024 * 1024,
            max_poll_records=self.settings.batch_max_events,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
        )
        self._consumer = consumer
        await consumer.start()
        try:
            if self.group_id is None:
                await self._assign_all(consumer)
            else:
                consumer.subscribe(topics=list(self.topics), listener=_Rebalance(self))
            status = asyncio.create_task(self._status_routine(consumer, stopping)
                                         if not self.shadow else stopping.wait())
            try:
                await self._consume_routine(consumer, stopping)
            finally:
                status.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await status
        finally:
            # Shutdown, in order: 1. stop fetching (the loop has returned);
            # 2. the batch in flight was committed or abandoned by the loop;
            # 3. leave the group and close the connections.
            async with self._between_batches():
                await self._commit_kafka_offsets(force=True)
            with contextlib.suppress(KafkaError, asyncio.CancelledError):
                await consumer.stop()
            self._consumer = None

    async def _load_physical(self) -> None:
        async with self.pool.acquire() as conn:
            for p in self.projections:
                if p.name in self._physical_override:
                    self._physical[p.name] = self._physical_override[p.name]
                    continue
                names = await physical_tables(conn, p.name)
                self._physical[p.name] = {t: names.get(t, t) for t in p.tables}

    async def _assign_all(self, consumer: AIOKafkaConsumer) -> None:
        await consumer.topics()  # refresh metadata
        tps: list[TopicPartition] = []
        for topic in self.topics:
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                raise LogTruncatedError(f"topic {topic!r} does not exist; create it first")
            tps += [TopicPartition(topic, p) for p in sorted(parts)
                    if self.only is None or self.only((topic, p))]
        consumer.assign(tps)
        await self._on_assigned([(tp.topic, tp.partition) for tp in tps])

    # -- assignment --------------------------------------------------------

    def _forget(self, tps: Sequence[TP]) -> None:
        self._aligner.forget(tps)
        for pos in self.positions.values():
            for tp in tps:
                pos.pop(tp, None)

    async def _on_assigned(self, tps: Sequence[TP]) -> None:
        """Load stored checkpoints and seek there (the log start if none)."""
        consumer = self._consumer
        if consumer is None or not tps:
            self.ready.set()
            return
        backoff = Backoff()
        while True:
            try:
                async with self.pool.acquire() as conn:
                    loaded = {p.name: await checkpoints.load(conn, p.name, tps)
                              for p in self.projections}
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = backoff.next_delay()
                log.warning("loading checkpoints failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
        log.info("assigned %d partition(s) of %d topic(s)", len(tps), len({t for t, _ in tps}))
        source = self.log_starts or consumer.beginning_offsets
        starts = await source([TopicPartition(*tp) for tp in tps])
        # Under the batch lock: a batch in flight must not overwrite these
        # positions with ones it computed before the assignment.
        async with self._between_batches():
            for tp in tps:
                self._log_starts[tp] = starts[TopicPartition(*tp)]
                for name, stored in loaded.items():
                    self.positions[name][tp] = stored[tp]
                await self._seek(consumer, tp, {tp: starts[TopicPartition(*tp)]})
        self.ready.set()

    async def _seek(self, consumer: AIOKafkaConsumer, tp: TP,
                    log_start: Mapping[TP, int] | None = None) -> None:
        self._aligner.forget([tp])  # fetched from where the consumer was
        offsets = [self.positions[p.name].get(tp, FROM_LOG_START) for p in self.projections]
        target = min(offsets)
        ktp = TopicPartition(*tp)
        start = (log_start or {}).get(tp)
        positive = [o for o in offsets if o != FROM_LOG_START]
        if start is not None and positive and min(positive) < start:
            await self._refuse(tp, min(positive), start, None,
                               "checkpoint is below the log start: retention deleted events "
                               "this projection never applied")
            return
        if target == FROM_LOG_START:
            await consumer.seek_to_beginning(ktp)
        else:
            consumer.seek(ktp, target)

    async def _refuse(self, tp: TP, checkpoint: int, log_start: int | None,
                      log_end: int | None, reason: str) -> None:
        consumer = self._consumer
        self.refused[tp] = reason
        self._aligner.forget([tp])
        if consumer is not None:
            consumer.pause(TopicPartition(*tp))
        log.error(
            "refusing %s[%d]: %s (checkpoint %d, log start %s, log end %s). Nothing was "
            "skipped or re-applied. Rebuild the projections (`projector rebuild --all`) or, "
            "if the loss is accepted, delete their rows in projector_checkpoints.",
            tp[0], tp[1], reason, checkpoint, log_start, log_end)
        with contextlib.suppress(Exception):
            async with self.pool.acquire() as conn:
                for p in self.projections:
                    await conn.execute(
                        "INSERT INTO refused_partitions (projection, topic, partition,"
                        " checkpoint, log_start, log_end, reason) VALUES ($1,$2,$3,$4,$5,$6,$7)"
                        " ON CONFLICT (projection, topic, partition) DO UPDATE SET"
                        " checkpoint = excluded.checkpoint, log_start = excluded.log_start,"
                        " log_end = excluded.log_end, reason = excluded.reason, at = now()",
                        p.name, tp[0], tp[1], checkpoint, log_start, log_end, reason)

    # -- the loop ------------------------------------------------------------

    async def _consume_routine(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event) -> None:
        """Cut batches out of what the fetch routine buffered, and apply them.

        While a batch's statements run, this process prepares the next batch (its
        projections' folding and encoding, :meth:`_prepare`) and the fetch
        routine decodes the records after it: the event loop is otherwise idle
        then. A batch is committed in the background (:attr:`_inflight`) and
        the next one starts once it has committed.
        """
        batch_max = self.settings.batch_max_events
        self._last_take = time.monotonic()
        fetching = asyncio.create_task(self._fetch_routine(consumer, stopping))
        stop = asyncio.ensure_future(stopping.wait())
        try:
            while not stopping.is_set():
                waiter = asyncio.ensure_future(self._fetched.wait())
                # Records held back waiting for other partitions go anyway after MAX_WAIT_S,
                # even if no fetch returns meanwhile (the poll timeout may be longer).
                patience = (max(0.0, MAX_WAIT_S - (time.monotonic() - self._last_take)) + 0.01
                            if len(self._aligner) else None)
                await asyncio.wait([waiter, fetching, stop, *([self._inflight] if self._inflight else [])],
                                   timeout=patience, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if stopping.is_set():
                    return
                if fetching.done():
                    fetching.result()  # a fetch routine that failed stops the engine
                    return
                if self._inflight is not None and self._inflight.done():
                    self._settled()  # raises what stopped the batch
                # Cleared before looking, not before waiting: what the fetch
                # routine adds while this batch runs wakes the next round.
                self._fetched.clear()
                async with self._batch_lock:
                    self._check_above_end(consumer)
                    unfetched, behind = await self._unfetched(consumer)
                    cut, horizon = self._aligner.ready(
                        unfetched, behind, batch_max, time.monotonic() - self._last_take, self._idle)
                    if (cut and self._inflight is not None and not self._inflight.done()
                            and (behind < batch_max or not self._aligner.holds(batch_max, horizon))):
                        # While a batch commits, the next is cut only if it is full, catching
                        # up. Else it waits: in the live tail, for what arrives until then (cut
                        # now, it would wait for this commit and hold back the records after
                        # it for its own); in a backlog, for the fetch routine to fill it.
                        cut = False
                    if cut:
                        entries = self._aligner.take(batch_max, horizon)
                        self._room.set()
                        batch = await self._prepare(consumer, entries)
                        del entries
                        if self._inflight is not None:
                            await asyncio.wait([self._inflight])
                            if not self._settled() and batch is not None:
                                # Prepared against checkpoints the batch before did not
                                # commit (fenced, or abandoned as the engine stops).
                                if not stopping.is_set():
                                    await self._reseek(consumer, list(batch.records))
                                batch = None
                        if batch is not None:
                            self._inflight_ends = {
                                w.projection.name: {tp: part.next_offset
                                                    for tp, part in w.partitions.items()}
                                for w in batch.work}
                            self._inflight = asyncio.ensure_future(
                                self._finish(consumer, batch, stopping))
                        # Freed with its task, not when the next batch is taken: the peak
                        # holds one batch less (a batch is the bulk of the projector's memory).
                        del batch
                        self._last_take = time.monotonic()
                # Outside the lock: a commit can wait on a rebalance, whose revoke
                # callback waits for this lock.
                await self._commit_kafka_offsets()
        finally:
            stop.cancel()
            fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetching
            if self._inflight is not None:
                # The batch in flight commits, or is abandoned if the engine stops.
                try:
                    await asyncio.wait([self._inflight])
                except asyncio.CancelledError:
                    self._inflight.cancel()
                    raise
                self._settled()

    def _settled(self) -> bool:
        """Take the result of the batch in flight, which is done: whether every
        projection committed it. Raises what made it fail."""
        task, self._inflight, self._inflight_ends = self._inflight, None, {}
        return True if task is None else task.result()

    @contextlib.asynccontextmanager
    async def _between_batches(self) -> AsyncIterator[None]:
        """The batch lock, once the batch in flight is done: the positions are the
        committed ones and no batch runs until the block ends. The consume routine
        takes the batch's result (and its error) itself."""
        async with self._batch_lock:
            if self._inflight is not None:
                await asyncio.wait([self._inflight])
            yield

    async def _fetch_routine(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event) -> None:
        """Fetch and decode into the aligner, while it has room."""
        decode = self.decode
        while not stopping.is_set():
            try:
                fetched = await self._fetch(consumer)
            except OffsetOutOfRangeError as exc:
                for ktp, offset in exc.args[0].items() if exc.args else []:
                    await self._refuse((ktp.topic, ktp.partition), offset, None,
                                       consumer.highwater(ktp),
                                       "checkpoint is outside the log: the topic was "
                                       "recreated or the broker lost its data")
                continue
            except NoOffsetForPartitionError as exc:
                # A partition whose position a rebalance reset before our seek
                # landed: seek again to our own checkpoint (never Kafka's).
                for ktp in exc.args:
                    if isinstance(ktp, TopicPartition):
                        await self._seek(consumer, (ktp.topic, ktp.partition))
                continue
            except KafkaError as exc:
                log.warning("fetch failed (%s); the consumer retries by itself", exc)
                await asyncio.sleep(0.5)
                continue
            if fetched is None:  # every partition's buffer is full (_fetch cleared _room)
                self._fetched.set()
                await self._room.wait()
                continue
            # No await from getmany's return to add(): a seek or a revocation
            # cannot slip in between (aiokafka drops records fetched before a seek).
            assigned = consumer.assignment()
            entries = {}
            for ktp, recs in fetched.items():
                tp = (ktp.topic, ktp.partition)
                if ktp in assigned and tp not in self.refused:
                    entries[tp] = [(rec.timestamp, rec, decode_one(ktp.topic, ktp.partition, rec, decode))
                                   for rec in recs]
            self._aligner.add(entries)
            self._idle = not fetched
            self._fetched.set()

    async def _fetch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]] | None:
        """What the consumer has, except from partitions the aligner holds enough of
        (None: that is all of them)."""
        timeout_ms = self.settings.poll_timeout_ms
        while True:
            # Room for ~2 batches in all: a partition full of newer records waits
            # while the others catch up with it.
            self._aligner.cap = max(64, _ALIGN_BATCHES * self.settings.batch_max_events
                                    // max(1, len(consumer.assignment())))
            self._room.clear()
            full = self._aligner.full()
            # A fetch may bring far more than max_partition_fetch_bytes (a broker
            # returns whole record batches): drain at most a partition's room at a
            # time, so that no partition's buffer grows much past the cap.
            max_records = min(self.settings.batch_max_events, self._aligner.cap)
            if not full:
                return dict(await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records))
            wanted = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) not in full]
            if not wanted:
                return None
            # Waiting on the partitions with room, until a batch is taken: then the full
            # ones may have room too, and what was fetched for them must not wait for
            # this wait's timeout (a partition caught up can hold it for all of it).
            getter = asyncio.ensure_future(
                consumer.getmany(*wanted, timeout_ms=timeout_ms, max_records=max_records))
            room = asyncio.ensure_future(self._room.wait())
            try:
                await asyncio.wait({getter, room}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                room.cancel()
            if getter.done():
                return dict(getter.result())
            # Cancelled while it waits: it has taken no record from the consumer yet.
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getter

    async def _unfetched(self, consumer: AIOKafkaConsumer) -> tuple[list[TP], float]:
        """The partitions with records still to fetch (or whose end is not known yet),
        and how many records that is in all (infinite while an end is unknown)."""
        out = []
        behind = 0.0
        for ktp in consumer.assignment():
            tp = (ktp.topic, ktp.partition)
            if tp in self.refused:
                continue
            hw = consumer.highwater(ktp)
            if hw is None:
                out.append(tp)
                behind = float("inf")
                continue
            position = await consumer.position(ktp)
            if position < hw:
                out.append(tp)
                behind += hw - position
        return out, behind

    def _check_above_end(self, consumer: AIOKafkaConsumer) -> None:
        # A checkpoint above the high watermark means the log was recreated.
        for name, pos in self.positions.items():
            for tp, offset in pos.items():
                if tp in self.refused or offset == FROM_LOG_START:
                    continue
                hw = consumer.highwater(TopicPartition(*tp))
                if hw is not None and offset > hw:
                    task = asyncio.ensure_future(self._refuse(
                        tp, offset, None, hw, f"{name}: checkpoint is above the log end: "
                        "the topic was recreated or the broker lost its data"))
                    task.add_done_callback(lambda t: t.exception())
                    self.refused[tp] = "above log end"

    async def _prepare(self, consumer: AIOKafkaConsumer,
                       entries: Mapping[TP, Sequence[tuple[Any, ...]]]) -> _Batch | None:
        """Sort ``entries`` into each projection's work, from the checkpoints the batch
        in flight leaves, and let the projections prepare it (see Projection.prepare).

        Runs while the batch before commits; if that one does not commit whole, this
        one is dropped and its partitions re-sought.
        """
        active = [p for p in self.projections if p.name not in self.paused]
        positions = {name: {**pos, **self._inflight_ends.get(name, {})}
                     for name, pos in self.positions.items()}
        records = self._without_jumps(consumer, entries, active, positions)
        if not records:
            return None
        decoded = Decoded(records)
        work, unknown = plan_work(active, positions, decoded)
        if not work:
            return None
        events = [list(itertools.chain.from_iterable(p.events for p in w.partitions.values()))
                  for w in work]
        for w, batch in zip(work, events, strict=True):
            prepare = getattr(w.projection, "prepare", None)
            if prepare is None or not batch:
                continue
            try:
                await prepare(batch, self._physical[w.projection.name])
            except Exception as exc:
                # Its apply does the work again in the transaction, where a failure
                # is retried (transient) or isolated (a poison event) as usual.
                log.debug("%s: preparing a batch failed (%r); applying it unprepared",
                          w.projection.name, exc)
        return _Batch(records, decoded, work, unknown, events)

    async def _finish(self, consumer: AIOKafkaConsumer, batch: _Batch,
                      stopping: asyncio.Event) -> bool:
        """Commit a prepared batch, each projection in its own transaction; whether
        every projection committed it."""
        records, decoded, work, unknown = batch.records, batch.decoded, batch.work, batch.unknown
        started = time.perf_counter()
        # Each projection commits in its own transaction (its checkpoints are
        # its own), on its own connection, all at once: PostgreSQL writes one
        # projection's rows while this process plans another's.
        if len(work) == 1:
            outcomes = [await self._commit_retrying(work[0], decoded, batch.events[0], stopping)]
        else:
            outcomes = await gather_or_cancel(
                *(self._commit_retrying(w, decoded, events, stopping)
                  for w, events in zip(work, batch.events, strict=True)))
        elapsed = time.perf_counter() - started
        committed = [(w, o) for w, o in zip(work, outcomes, strict=True) if o is not None]
        # A decoder rejection is one shared entry, whichever projections moved past it.
        letters = list({key: reason for _, o in committed for key, reason in o[1].items()}.items())
        if len(committed) == len(work):  # else the records come again after the re-seek
            self.unknown_skipped += sum(unknown.values())
        if committed:
            n_records = sum(len(r) for r in records.values())
            self.commit_log.append((elapsed, n_records))
            if self.metrics:
                self._observe([w for w, _ in committed], decoded,
                              [(key[0], reason) for key, reason in letters], unknown, n_records,
                              elapsed)
            self.batches_committed += 1
        newest_of: dict[int, datetime] = {}
        for w, (applied, _) in committed:
            name = w.projection.name
            for tp, part in w.partitions.items():
                self.positions[name][tp] = part.next_offset
                self.applied_by[name] += len(part.events)
                if part.events:
                    # Projections at the same checkpoint share a partition's list of events.
                    newest = newest_of.get(id(part.events))
                    if newest is None:
                        newest = newest_of[id(part.events)] = max(map(_occurred_at, part.events))
                    if name not in self.last_event_at or newest > self.last_event_at[name]:
                        self.last_event_at[name] = newest
            self.events_applied += applied
        if len(committed) < len(work) and not stopping.is_set():
            await self._reseek(consumer, list(records))  # a projection was fenced
        return len(committed) == len(work)

    async def _commit_retrying(
        self, w: ProjectionWork, decoded: Decoded, events: list[Positioned], stopping: asyncio.Event
    ) -> tuple[int, dict[LetterKey, str]] | None:
        """Commit one projection's part of a batch, retrying transient failures.

        None: not committed (fenced, or abandoned because the engine stops).
        """
        backoff = Backoff()
        poison: dict[PosKey, BaseException] = {}
        isolate = False
        while True:
            try:
                return await self._commit(w, decoded, events, poison, isolate)
            except _ApplyFailed:
                # Find the events the projection fails on, then apply the others whole.
                found = await self._find_poison(w, poison)
                if not found:
                    isolate = True  # it fails only in company: commit bisecting (rare)
                poison.update(found)
                continue
            except FencedError as exc:
                self.fenced += 1
                if self.metrics:
                    self.metrics.fenced.inc()
                log.warning("%s", exc)
                return None
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if stopping.is_set():
                    log.info("stopping: abandoning the uncommitted batch of %s (%s)",
                             w.projection.name, exc)
                    return None
                delay = backoff.next_delay()
                log.warning("%s: batch commit failed (%s: %s); retrying in %.1f s without "
                            "moving checkpoints", w.projection.name, type(exc).__name__, exc,
                            delay)
                await asyncio.sleep(delay)

    def _observe(self, work: Sequence[ProjectionWork], decoded: Decoded,
                 letters: list[tuple[str, str]], unknown: Mapping[str, int], records: int,
                 elapsed: float) -> None:
        assert self.metrics is not None
        applied: dict[tuple[str, str], int] = {}
        times: list[datetime] = []
        for w in work:
            for part in w.partitions.values():
                for pe in part.events:
                    key = (w.projection.name, pe.event.event_type)
                    applied[key] = applied.get(key, 0) + 1
        for entries in decoded.by_tp.values():
            times += [e[2].event.occurred_at for e in entries if isinstance(e[2], Positioned)]
        self.metrics.batch_committed(records, elapsed, applied, letters, unknown,
                                     times, datetime.now(UTC))

    def _without_jumps(self, consumer: AIOKafkaConsumer,
                       records: Mapping[TP, Sequence[tuple[Any, ...]]],
                       active: Sequence[Projection],
                       positions: Mapping[str, Mapping[TP, int]]) -> dict[TP, Sequence[Any]]:
        """Drop partitions whose records start past the checkpoint, and re-seek them.

        Applying them would move the checkpoint over events never applied. A
        log may have real gaps (compaction, transaction markers): when the
        same jump comes back after the re-seek, it is accepted.
        """
        out: dict[TP, Sequence[Any]] = {}
        for tp, recs in records.items():
            expected = [positions[p.name][tp] for p in active if tp in positions[p.name]]
            first = recs[0][1].offset if recs else None  # (timestamp, record, item)
            if not expected or first is None:
                out[tp] = recs
                continue
            # Nothing applied yet: the records must start at the log start.
            want = min(expected) if min(expected) >= 0 else self._log_starts.get(tp, 0)
            if first <= want:
                out[tp] = recs
                continue
            jump = (want, first)
            if self._accepted_gaps.get(tp) == jump:
                out[tp] = recs
                continue
            self._accepted_gaps[tp] = jump
            log.warning("%s[%d]: fetched from offset %d but the checkpoint is %d; re-seeking "
                        "so that nothing is skipped", tp[0], tp[1], first, jump[0])
            self._aligner.forget([tp])
            consumer.seek(TopicPartition(*tp), jump[0])
        return out

    async def _commit(self, w: ProjectionWork, decoded: Decoded, events: list[Positioned],
                      poison: Mapping[PosKey, BaseException] | None = None,
                      isolate: bool = False) -> tuple[int, dict[LetterKey, str]]:
        """One projection's part of a batch, its dead letters and its checkpoints,
        in one transaction. Returns the events applied and the reason of each
        dead letter, by key.

        The batch, less the ``poison`` events (dead-lettered), is applied whole,
        in the transaction itself: rows written in a savepoint would carry a
        subtransaction's xid, which the API's change feed cannot match to the
        running transactions it sees (``api.cursor``). If the projection raises,
        the transaction is rolled back (:class:`_ApplyFailed`); the caller finds
        the poison events (:meth:`_find_poison`) and runs it again. ``isolate``:
        bisect in savepoints here instead (when no single event fails alone).
        """
        name = w.projection.name
        letters: dict[LetterKey, dead_letters.DeadLetter] = {}
        async with self.pool.acquire() as conn, self._live_transaction(conn, name):
            failed: list[tuple[Positioned, BaseException]] = []
            if poison:
                failed = [(e, poison[_pos(e)]) for e in events if _pos(e) in poison]
                events = [e for e in events if _pos(e) not in poison]
            applied = len(events)
            if isolate:
                changed, more = await self._apply_isolating(conn, w.projection, events)
                failed += more
                applied -= len(more)
            else:
                try:
                    changed = (await w.projection.apply(conn, events, self._physical[name])
                               if events else set())
                except Exception as error:
                    if is_transient(error):
                        raise
                    raise _ApplyFailed(error) from error
            for pe, exc in failed:
                log.error("projection %s failed on event %s (%s[%d]@%d): %r; dead-lettered",
                          name, pe.event.event_id, pe.topic, pe.partition, pe.offset, exc,
                          extra=event_context(pe, name))
                rec = decoded.record(pe.topic, pe.partition, pe.offset)
                letters[(name, pe.topic, pe.partition, pe.offset)] = dead_letters.DeadLetter(
                    name, pe.topic, pe.partition, pe.offset, rec.key, rec.value,
                    list(rec.headers or ()), RejectReason.PROJECTION_ERROR.value,
                    f"{type(exc).__name__}: {exc}", pe.event.event_id, pe.event.event_type)
            for part in w.partitions.values():
                # Decoder rejections are one entry shared by every projection:
                # whichever moves past the record first writes it.
                for r in part.rejected:
                    letters[(dead_letters.ALL_PROJECTIONS, r.topic, r.partition, r.offset)] = r
                    log.debug("rejected %s[%d]@%d: %s: %s; dead-lettered", r.topic,
                              r.partition, r.offset, r.reason, r.error[:200],
                              extra={"topic": r.topic, "partition": r.partition,
                                     "offset": r.offset, "event_id": r.event_id,
                                     "reason": r.reason})
            # In key order: two projections' transactions writing the same shared
            # entries then wait for each other in one order, never in a cycle.
            await dead_letters.write(conn, [letters[k] for k in sorted(letters)])
            await checkpoints.advance_and_commit(
                conn, name, {tp: (p.expected, p.next_offset) for tp, p in w.partitions.items()},
                (NOTIFY_CHANNEL, sorted(changed)) if changed and not self.shadow else None)
        return applied, {k: d.reason for k, d in letters.items()}

    @contextlib.asynccontextmanager
    async def _live_transaction(self, conn: asyncpg.Connection, projection: str) -> AsyncIterator[None]:
        """A transaction holding the projection's live lock, shared with every other
        live batch (a rebuild's cut-over takes it exclusively to hold live writes while
        it swaps tables; a shadow engine takes none). BEGIN and the lock are one round
        trip, which asyncpg's transaction object cannot make: so savepoints inside are
        :func:`_savepoint`'s. The body commits (with its last statement:
        :func:`checkpoints.advance_and_commit`); what it leaves open is rolled back, and
        so is everything on an error."""
        begin = BATCH_BEGIN
        if not self.shadow:
            # An integer we computed: safe to inline (the simple protocol takes no parameters).
            begin += f"; SELECT pg_advisory_xact_lock_shared({int(live_lock_key(projection))})"
        try:
            await conn.execute(begin)
            yield
        finally:
            await _undo(conn, "ROLLBACK")

    async def _find_poison(self, w: ProjectionWork,
                           known: Mapping[PosKey, BaseException]) -> dict[PosKey, BaseException]:
        """The events of ``w`` (less ``known``) the projection fails on, found by
        bisecting in savepoints in a transaction that is then rolled back."""
        events = [e for part in w.partitions.values() for e in part.events
                  if _pos(e) not in known]
        async with self.pool.acquire() as conn, self._live_transaction(conn, w.projection.name):
            _, failed = await self._apply_isolating(conn, w.projection, events)
        return {_pos(pe): exc for pe, exc in failed}

    async def _apply_isolating(
        self, conn: asyncpg.Connection, projection: Projection, events: Sequence[Positioned]
    ) -> tuple[set[str], list[tuple[Positioned, BaseException]]]:
        """Apply ``events``; on a non-transient error, bisect to find the poison ones."""
        if not events:
            return set(), []
        physical = self._physical[projection.name]
        try:
            async with _savepoint(conn):  # a failure undoes only this part
                return await projection.apply(conn, events, physical), []
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(events) == 1:
                return set(), [(events[0], exc)]
        mid = len(events) // 2
        left, lfail = await self._apply_isolating(conn, projection, events[:mid])
        right, rfail = await self._apply_isolating(conn, projection, events[mid:])
        return left | right, lfail + rfail

    async def _reseek(self, consumer: AIOKafkaConsumer, tps: Sequence[TP],
                      stored: Mapping[str, Mapping[TP, int]] | None = None) -> None:
        """Seek ``tps`` to the stored checkpoints (``stored``, per projection, if the
        caller has just read them; else read here, as after fencing)."""
        if stored is None:
            async with self.pool.acquire() as conn:
                stored = {p.name: await checkpoints.load(conn, p.name, tps) for p in self.projections}
        for name, theirs in stored.items():
            self.positions[name].update({tp: theirs[tp] for tp in tps})
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        for tp in tps:
            if tp in assigned:
                await self._seek(consumer, tp)

    async def _commit_kafka_offsets(self, force: bool = False) -> None:
        """Commit to Kafka too, for monitoring tools only: never read back."""
        consumer = self._consumer
        now = time.monotonic()
        if (consumer is None or self.group_id is None
                or (not force and now - self._last_kafka_commit < _KAFKA_COMMIT_INTERVAL_S)):
            return
        self._last_kafka_commit = now
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        for tp in assigned:
            mine = [pos[tp] for pos in self.positions.values() if tp in pos]
            if mine and min(mine) >= 0:
                offsets[TopicPartition(*tp)] = OffsetAndMetadata(min(mine), "")
        if offsets:
            with contextlib.suppress(KafkaError):
                await consumer.commit(offsets)

    # -- status ----------------------------------------------------------------

    async def _status_routine(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event,
                              interval_s: float = 1.0) -> None:
        """Every second: pick up pause/resume, publish state, log ends and rates; every
        _VERIFY_INTERVAL_S, check that the database still holds our checkpoints."""
        last = {n: (time.monotonic(), c) for n, c in self.applied_by.items()}
        verified = time.monotonic()
        while not stopping.is_set():
            try:
                await self._sync_status(consumer, last)
                if time.monotonic() - verified >= _VERIFY_INTERVAL_S:
                    await self._verify_checkpoints(consumer)
                    verified = time.monotonic()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("publishing status failed (%s); will retry", exc)
            await asyncio.sleep(interval_s)

    async def _verify_checkpoints(self, consumer: AIOKafkaConsumer) -> None:
        """Re-seek the partitions whose stored checkpoint is behind the engine's.

        The database lost commits the engine saw succeed: PostgreSQL crashed with
        commits not yet flushed (the projector's sessions use synchronous_commit=off,
        see projector.db), or it was restored from a backup. The next batch of such a
        partition would be fenced and re-sought anyway; this also brings back a partition
        that receives nothing new. A stored checkpoint *ahead* of ours is another
        instance's work: its compare-and-set fences us on our next batch.
        """
        async with self._between_batches():  # ours are the committed positions
            tps = [(ktp.topic, ktp.partition) for ktp in consumer.assignment()
                   if (ktp.topic, ktp.partition) not in self.refused]
            if not tps:
                return
            async with self.pool.acquire() as conn:
                stored = {p.name: await checkpoints.load(conn, p.name, tps) for p in self.projections}
            behind = sorted({tp for name, theirs in stored.items() for tp in tps
                             if theirs[tp] < self.positions[name].get(tp, FROM_LOG_START)})
            if behind:
                log.warning("the database holds older checkpoints than this projector committed on "
                            "%d partition(s) (PostgreSQL lost its last commits, or was restored "
                            "from a backup): applying those events again from there",
                            len(behind), extra={"partitions": [f"{t}[{p}]" for t, p in behind]})
                await self._reseek(consumer, behind, stored)

    async def _sync_status(self, consumer: AIOKafkaConsumer,
                           last: dict[str, tuple[float, int]]) -> None:
        names = [p.name for p in self.projections]
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT name, paused FROM projections WHERE name = ANY($1)",
                                    names)
            paused = {r["name"] for r in rows if r["paused"]}
            resumed = self.paused - paused
            if paused != self.paused:
                async with self._between_batches():
                    self.paused = paused
                    if resumed:
                        log.info("resumed %s: catching up from its checkpoints",
                                 ", ".join(sorted(resumed)))
                        await self._reseek(consumer, list(self.positions[next(iter(resumed))]))
                if paused - resumed:
                    log.info("paused: %s", ", ".join(sorted(paused)))
            lag = self.lag_by_projection()
            now = time.monotonic()
            states, rates, newest = [], [], []
            for name in names:
                t0, c0 = last[name]
                rate = (self.applied_by[name] - c0) / max(1e-6, now - t0)
                last[name] = (now, self.applied_by[name])
                rates.append(rate)
                newest.append(self.last_event_at.get(name))
                states.append(self.state_of(name, lag.get(name, 0)))
            if self.metrics:
                self._observe_positions(consumer, dict(zip(names, states, strict=True)))
            await conn.execute(
                "UPDATE projections p SET state = u.state, events_per_second = u.eps,"
                " last_event_at = greatest(p.last_event_at, u.newest), heartbeat_at = now()"
                " FROM unnest($1::text[], $2::text[], $3::float8[], $4::timestamptz[])"
                " AS u(name, state, eps, newest) WHERE p.name = u.name",
                names, states, rates, newest)
            ends = [(tp.topic, tp.partition, consumer.highwater(tp))
                    for tp in consumer.assignment() if consumer.highwater(tp) is not None]
            if ends:
                await conn.execute(
                    "INSERT INTO partition_status (topic, partition, end_offset, owner)"
                    " SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[])"
                    " ON CONFLICT (topic, partition) DO UPDATE SET end_offset ="
                    " excluded.end_offset, owner = excluded.owner, updated_at = now()",
                    [e[0] for e in ends], [e[1] for e in ends], [e[2] for e in ends],
                    [self.client_id] * len(ends))

    def _observe_positions(self, consumer: AIOKafkaConsumer, states: Mapping[str, str]) -> None:
        assert self.metrics is not None
        lag: dict[tuple[str, str, int], int] = {}
        cps: dict[tuple[str, str, int], int] = {}
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            for name, pos in self.positions.items():
                cp = max(0, pos.get((tp.topic, tp.partition), 0))
                cps[(name, tp.topic, tp.partition)] = cp
                if hw is not None:
                    lag[(name, tp.topic, tp.partition)] = max(0, hw - cp)
        self.metrics.positions(lag, cps)
        self.metrics.states(states, len(self.refused))

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Caught up within ``ready_lag`` events, nothing refused, partitions known."""
        lag = self.lag_by_projection()
        ok = (self.ready.is_set() and not self.refused
              and all(v <= self.ready_lag for n, v in lag.items() if n not in self.paused))
        return ok, {"lag": lag, "refused": len(self.refused), "ready_lag": self.ready_lag}

    def state_of(self, name: str, lag: int) -> str:
        if name in self.paused:
            return "PAUSED"
        if self.refused:
            return "FAILED"
        return "CATCHING_UP" if lag > self.ready_lag else "LIVE"

    def lag_by_projection(self) -> dict[str, int]:
        """Events behind the fetch high watermarks, summed per projection."""
        consumer = self._consumer
        out = {name: 0 for name in self.positions}
        if consumer is None:
            return out
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            for name, pos in self.positions.items():
                out[name] += max(0, hw - max(0, pos.get((tp.topic, tp.partition), 0)))
        return out

    def log_ends(self) -> dict[TP, int | None]:
        """The fetch high watermark of every assigned partition (None: not fetched yet)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        return {(tp.topic, tp.partition): consumer.highwater(tp) for tp in consumer.assignment()}

    def lag(self) -> dict[TP, int]:
        """Events behind the fetch high watermark, per assigned partition."""
        consumer = self._consumer
        out: dict[TP, int] = {}
        if consumer is None:
            return out
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            key = (tp.topic, tp.partition)
            mine = [pos.get(key, FROM_LOG_START) for pos in self.positions.values()]
            if hw is not None and mine:
                out[key] = max(0, hw - max(0, min(mine)))
        return out
