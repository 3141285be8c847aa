"""Count what the consumer left behind, from the topics (``read_committed``), Redis and the landing files."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson

from integration.guarantees._workload import BASE_TIME, Headers, Record

BASE_MS = int(BASE_TIME.timestamp() * 1000)

QUIET = logging.getLogger("integration.guarantees.librdkafka")
ORIGINAL_PARTITION = "thimble.original.partition"
ORIGINAL_OFFSET = "thimble.original.offset"
ORIGINAL_TOPIC = "thimble.original.topic"
DEAD_LETTER_HEADERS = ("thimble.error.class", "thimble.error.stage", "thimble.original.timestamp")


@dataclass(frozen=True)
class Read:
    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int = -1
    offset: int = -1


def read_topic(bootstrap: str, topic: str, timeout_s: float = 90.0) -> list[Read]:
    """Every committed record of ``topic`` (``read_committed``) from the first offset to the end.

    The end is the high watermark, not the last stable offset a ``read_committed`` reader is told: a
    transaction a killed process left open holds the stable offset back until the broker aborts it
    (``transaction.timeout.ms``), and what others committed behind it would be missed. Raises
    :class:`TimeoutError` when the end is not reached within ``timeout_s``.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    def consumer(isolation: str) -> Any:
        return Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"guarantee-audit-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": isolation,
                "fetch.max.bytes": 8 * 1024 * 1024,
                "logger": QUIET,
            }
        )

    reader, sizer = consumer("read_committed"), consumer("read_uncommitted")
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)]
        ends = {tp.partition: _watermarks(sizer, tp) for tp in tps}
        reader.assign(tps)
        records: list[Read] = []
        deadline = time.monotonic() + timeout_s

        def behind() -> list[str]:
            late = []
            for position in reader.position([TopicPartition(topic, p) for p in ends]):
                low, high = ends[position.partition]
                if high > low and position.offset < high:
                    late.append(f"[{position.partition}] at {position.offset} of {high}")
            return late

        while behind():
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{topic} was not read to its end within {timeout_s:g}s (a transaction left open?): "
                    + ", ".join(behind())
                )
            for msg in reader.consume(1000, 0.5):
                if msg.error() is None:
                    headers = cast(Headers, list(msg.headers() or []))
                    records.append(Read(msg.key(), msg.value(), headers, msg.partition(), msg.offset()))
        return records
    finally:
        reader.close()
        sizer.close()


def _watermarks(consumer: Any, tp: Any, timeout_s: float = 60.0) -> tuple[int, int]:
    """Low and high watermark, asked again (a second apart) while a partition's leader is moving."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            return int(low), int(high)
        except KafkaException:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


@dataclass
class Counts:
    """What one sink holds, against what it should hold."""

    expected: int
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    wrong: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 3:
            self.examples.append(text)


def count_ids(expected: set[int], seen: list[int], what: str, copies: Counter[int] | None = None) -> Counts:
    """``seen`` against ``expected``; an id the input holds ``copies[id]`` times may be seen that often
    without being duplicated."""
    counts = Counts(len(expected))
    tally = Counter(seen)
    missing = expected - set(tally)
    counts.lost = len(missing)
    held = copies or Counter()
    counts.duplicated = sum(max(0, n - max(1, held[i])) for i, n in tally.items())
    extra = set(tally) - expected
    counts.unexpected = len(extra)
    if missing:
        counts.note(f"{what}: {len(missing)} lost, e.g. ids {sorted(missing)[:5]}")
    if extra:
        counts.note(f"{what}: {len(extra)} unexpected ids, e.g. {sorted(extra)[:5]}")
    return counts


@dataclass
class Sent:
    """What an input topic holds of the records the suite sent. Its idempotent producer may still write
    a record twice: after a broker restart it bumps its epoch and sends what was in flight again."""

    copies: Counter[int]  # valid event id: how many times the topic holds it
    poison: dict[tuple[int, int], Record]  # (partition, offset): the poison record there
    again: int  # records held more often than they were sent


def sent_records(records: list[Record], reads: list[Read]) -> Sent:
    """Match what an input topic holds (read back) with the records sent, by key, value and headers."""

    def identity(key: bytes | None, value: bytes | None, headers: Headers) -> tuple[object, ...]:
        return key, value, tuple(headers)

    by_identity: dict[tuple[object, ...], Record] = {}
    sent_n: Counter[tuple[object, ...]] = Counter()
    for record in records:
        key = identity(record.key, record.value, record.headers)
        by_identity.setdefault(key, record)
        sent_n[key] += 1
    held_n: Counter[tuple[object, ...]] = Counter()
    copies: Counter[int] = Counter()
    poison: dict[tuple[int, int], Record] = {}
    for read in reads:
        key = identity(read.key, read.value, read.headers)
        match = by_identity.get(key)
        if match is None:
            continue
        held_n[key] += 1
        if match.poison:
            poison[(read.partition, read.offset)] = match
        elif match.event_id is not None:
            copies[match.event_id] += 1
    again = sum(max(0, n - sent_n[key]) for key, n in held_n.items())
    return Sent(copies, poison, again)


def output_ids(records: list[Read]) -> list[int]:
    return [int(orjson.loads(r.value)["id"]) for r in records if r.value is not None]


def _header_list(headers: Headers) -> list[tuple[str, bytes | None]]:
    return [(k, v) for k, v in headers if not k.startswith("thimble.")]


def audit_dead_letters(poison: dict[tuple[int, int], Record], dead: list[Read], source: str) -> Counts:
    """The dead-letter topic must hold each poison record once or more, byte for byte, and nothing else."""
    counts = Counts(len(poison))
    seen: Counter[tuple[int, int]] = Counter()
    for letter in dead:
        headers = dict(letter.headers)
        try:
            where = (int(headers[ORIGINAL_PARTITION] or b""), int(headers[ORIGINAL_OFFSET] or b""))
        except (KeyError, ValueError):
            counts.unexpected += 1
            counts.note("a dead letter without its original partition/offset headers")
            continue
        seen[where] += 1
        record = poison.get(where)
        if record is None:
            counts.unexpected += 1
            counts.note(f"dead letter of a valid record at partition {where[0]} offset {where[1]}")
            continue
        problems = []
        if headers.get(ORIGINAL_TOPIC) != source.encode():
            problems.append("original topic")
        if any(not headers.get(name) for name in DEAD_LETTER_HEADERS):
            problems.append("dead-letter headers")
        if letter.key != record.key:
            problems.append("key")
        if letter.value != record.value:
            problems.append(f"value ({_show(letter.value)} instead of {_show(record.value)})")
        if _header_list(letter.headers) != _header_list(record.headers):
            problems.append("original headers")
        if problems:
            counts.wrong += 1
            counts.note(f"{record.kind}: dead letter differs in {', '.join(problems)}")
    missing = set(poison) - set(seen)
    counts.lost = len(missing)
    for where in sorted(missing)[:3]:
        counts.note(f"{poison[where].kind} at partition {where[0]} offset {where[1]} never dead-lettered")
    counts.duplicated = sum(n - 1 for n in seen.values() if n > 1)
    return counts


def _show(value: bytes | None) -> str:
    if value is None:
        return "null"
    return repr(value[:20]) + ("…" if len(value) > 20 else "")


def audit_online_store(
    redis_url: str, prefix: str, feature_set: str, latest: dict[int, tuple[int, int]]
) -> Counts:
    """Each entity's hash holds its valid event with the latest event time."""
    import redis

    counts = Counts(len(latest))
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        entities = sorted(latest)
        for entity in entities:
            pipe.hgetall(f"{prefix}:{feature_set}:{entity}")
        stored: list[dict[bytes, bytes]] = pipe.execute()
    finally:
        client.close()
    for entity, fields in zip(entities, stored, strict=True):
        want_id, want_ms = latest[entity][0], BASE_MS + latest[entity][1]
        if not fields:
            counts.lost += 1
            counts.note(f"online store: entity {entity} missing")
            continue
        got_id = orjson.loads(fields.get(b"id", b"null"))
        got_ms = int(fields.get(b"_event_time", b"-1"))
        if (got_id, got_ms) != (want_id, want_ms):
            counts.wrong += 1
            counts.note(
                f"online store: entity {entity} holds id {got_id} at {got_ms}, not {want_id} at {want_ms}"
            )
    return counts


def audit_counts(
    redis_url: str, prefix: str, feature_set: str, expected: dict[int, tuple[int, int]]
) -> Counts:
    """Each entity's stateful count holds every valid event once: its count and the sum of its ids."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        entities = sorted(expected)
        for entity in entities:
            pipe.hmget(f"{prefix}:{feature_set}:{entity}", ["count", "ids"])
        stored = dict(zip(entities, pipe.execute(), strict=True))
    finally:
        client.close()
    return compare_counts(expected, stored)


def compare_counts(expected: dict[int, tuple[int, int]], stored: dict[int, list[bytes | None]]) -> Counts:
    """``expected`` (count, sum of ids) per entity against the stored ``count`` and ``ids`` fields."""
    counts = Counts(sum(n for n, _ in expected.values()))
    for entity, (want_n, want_ids) in sorted(expected.items()):
        raw = stored.get(entity) or [None, None]
        got = tuple(None if v is None else int(orjson.loads(v)) for v in raw)
        if got == (want_n, want_ids):
            continue
        got_n = got[0] or 0
        counts.lost += max(0, want_n - got_n)
        counts.duplicated += max(0, got_n - want_n)
        counts.wrong += 1
        counts.note(f"stateful count: entity {entity} holds {got}, not ({want_n}, {want_ids}) (count, ids)")
    return counts


def landed_ids(landing: Path, dataset: str) -> list[int]:
    import pyarrow.parquet as pq

    ids: list[int] = []
    for path in sorted((landing / dataset).glob("date=*/*.parquet")):
        ids.extend(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return ids


def merge(*counts: Counts) -> dict[str, Any]:
    return {
        "lost": sum(c.lost for c in counts),
        "duplicated": sum(c.duplicated for c in counts),
        "examples": [e for c in counts for e in c.examples],
    }
