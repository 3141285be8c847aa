from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thimble.common.errors import ConfigError
from thimble.modelops._prediction_log import PROBE_RECORDS, PredictionLog, spill_folder
from thimble.modelops._spill import SpillFile
from thimble.modelops.config import load_modelops_settings


def _records(n: int) -> list[tuple[bytes | None, bytes]]:
    return [(f"r{i}".encode(), orjson.dumps({"request_id": f"r{i}", "x": i})) for i in range(n)]


def test_the_spill_file_keeps_records_up_to_its_bound(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path, max_bytes=200)
    kept = spill.write(_records(10))
    assert 0 < kept < 10
    assert spill.write(_records(1)) == 0
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 200
    (path,) = spill.claim()
    records, _, at_end = spill.read(path, 0, 100)
    assert records == _records(kept)
    assert at_end
    spill.done(path)
    assert not any(tmp_path.iterdir())
    assert spill.write(_records(1)) == 1  # room again once re-sent


def test_files_of_dead_processes_are_claimed_and_live_ones_left(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    (tmp_path / f"{dead_pid}.jsonl").write_bytes(b'{"key":"a","value":{"v":1}}\n{"key":"b","val')
    (tmp_path / f"{os.getppid()}.jsonl").write_bytes(b'{"key":"c","value":{"v":3}}\n')
    spill = SpillFile(tmp_path, max_bytes=10_000)
    assert spill.pending()
    (claimed,) = spill.claim()
    assert spill.read(claimed, 0, 10)[0] == [(b"a", b'{"v":1}')]  # the torn line is skipped
    assert claimed.name == f"{dead_pid}.jsonl.sending-{os.getpid()}"
    assert not spill.pending()
    assert (tmp_path / f"{os.getppid()}.jsonl").exists()


def _on_disk(folder: Path) -> Counter[bytes | None]:
    spill = SpillFile(folder, max_bytes=1 << 30)
    keys: Counter[bytes | None] = Counter()
    for path in folder.iterdir():
        keys.update(key for key, _ in spill.read(path, 0, 1 << 30)[0])
    return keys


def test_a_claimed_file_is_read_a_slice_at_a_time_and_its_unread_rest_put_back(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path, max_bytes=10_000)
    assert spill.write(_records(10)) == 10
    full = sum(p.stat().st_size for p in tmp_path.iterdir())
    (path,) = spill.claim()
    first, offset, at_end = spill.read(path, 0, 4)
    assert first == _records(4)
    assert not at_end
    assert spill.write(_records(1)) == 1  # what was read is out of the bound
    spill.put_back(path, offset)
    assert [p.name for p in tmp_path.iterdir()] == [f"{os.getpid()}.jsonl"]
    assert _on_disk(tmp_path) == Counter(key for key, _ in _records(10)[4:] + _records(1))
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < full


def test_while_kafka_fails_only_probes_are_sent_after_a_growing_wait_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        config = {
            "bootstrap.servers": f"127.0.0.1:{closed.getsockname()[1]}",
            "message.timeout.ms": 50,
            "log_level": 0,
        }
        plog = PredictionLog("t", config, spill_dir=tmp_path, retry_first_s=1.0, retry_s=4.0)
        assert plog._spill.write(_records(100)) == 100
        plog._spill_waiting = True

        def settle() -> None:
            deadline = time.monotonic() + 10
            while plog._probe_unsettled and time.monotonic() < deadline:
                plog._producer.poll(0.05)
            assert plog._probe_unsettled == 0

        now = time.monotonic()
        waits = []
        for _ in range(4):
            assert plog._resend(now) is False
            assert plog.resent == PROBE_RECORDS * (len(waits) + 1)  # a probe, not the whole spill
            assert plog._resend(now) is False  # nothing more while the probe is out
            settle()
            waits.append(plog._next_probe - time.monotonic())
            now = plog._next_probe
        assert plog.resent == 4 * PROBE_RECORDS
        assert [round(w) for w in waits] == [1, 2, 4, 4]
        assert plog.spilled == 4 * PROBE_RECORDS
        assert plog.dropped == 0
        asyncio.run(plog.close(1.0))
    assert _on_disk(tmp_path) == Counter(key for key, _ in _records(100))  # each once, none lost


def test_a_record_kafka_refuses_as_too_large_is_dropped_and_counted_not_spilled_forever(
    tmp_path: Path,
) -> None:
    drops: list[tuple[int, str]] = []
    config = {"bootstrap.servers": "127.0.0.1:9", "message.max.bytes": 1000, "log_level": 0}
    plog = PredictionLog("t", config, on_drop=lambda n, why: drops.append((n, why)), spill_dir=tmp_path)
    big = (b"big", orjson.dumps({"request_id": "big", "x": "y" * 5000}))
    assert plog._spill.write([big, *_records(3)]) == 4
    plog._spill_waiting = True
    plog._resend(time.monotonic())
    assert drops == [(1, "refused")]
    assert plog.resent == 3
    asyncio.run(plog.close(0.5))
    assert _on_disk(tmp_path) == Counter(key for key, _ in _records(3))


def test_under_steady_load_records_are_serialised_in_batches_and_all_sent(tmp_path: Path) -> None:
    """One request per event-loop turn must not make one serialisation call per record."""
    config = {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}
    plog = PredictionLog("t", config, interval_s=0.005, spill_dir=tmp_path)
    batches: list[int] = []
    serialise = plog._serialise

    def counted(batch: list[Any]) -> list[bytes | None]:
        batches.append(len(batch))
        return serialise(batch)

    plog._serialise = counted  # type: ignore[method-assign]

    def entry(i: int) -> Any:
        return (f"r{i}", "m", 1, 0, 0.1, [{"x": i}], [{"y": i}], list, list, "m", "primary")

    async def steady_load() -> int:
        loop = asyncio.get_running_loop()
        plog._task = loop.create_task(plog._drain_forever())
        put = 0
        stop = loop.time() + 0.2
        while loop.time() < stop:
            plog.put(entry(put))
            put += 1
            await asyncio.sleep(0)
        deadline = loop.time() + 10
        while plog.sent < put and loop.time() < deadline:
            await asyncio.sleep(0.005)
        await plog.close(0.1)
        return put

    put = asyncio.run(steady_load())
    assert plog.sent == put == sum(batches)
    assert len(batches) * 20 < put, f"{len(batches)} serialisations for {put} records"


@given(st.text(max_size=300))
def test_no_topic_name_makes_a_spill_folder_outside_the_spill_root(topic: str) -> None:
    folder = spill_folder(topic)
    assert folder.parent == spill_folder("t").parent
    assert folder.name not in ("", ".", "..")


@pytest.mark.parametrize("topic", ["..", "../elsewhere", "a/b"])
def test_a_prediction_log_topic_kafka_would_refuse_is_a_config_error(topic: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_modelops_settings(overrides={"modelops": {"server": {"prediction_log_topic": topic}}})
    (problem,) = info.value.problems
    assert f"modelops.server.prediction_log_topic: {topic!r} is not a Kafka topic name" in problem


def _unreachable_log(spill_dir: Path) -> tuple[PredictionLog, list[tuple[int, str]]]:
    """A prediction log whose Kafka never answers, and the drops it reports (count, reason)."""
    dropped: list[tuple[int, str]] = []
    config = {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}
    plog = PredictionLog(
        "t", config, spill_dir=spill_dir, on_drop=lambda n, reason: dropped.append((n, reason))
    )
    return plog, dropped


def test_a_spill_file_removed_under_the_server_is_logged_its_records_counted_and_sending_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plog, dropped = _unreachable_log(tmp_path)
    assert plog._spill.write(_records(40)) == 40
    plog._spill_waiting = True
    plog._resend(time.monotonic())  # a probe: the file is claimed and its first records read
    assert plog.resent == PROBE_RECORDS
    (claimed,) = [c.path for c in plog._claims]
    claimed.unlink()
    plog._probe_unsettled = 0  # (as if the probe had settled)
    assert plog._resend(time.monotonic()) is True
    assert plog._claims == []
    assert any("could not be read" in r.getMessage() for r in caplog.records)
    assert dropped == [(40 - PROBE_RECORDS, "spill_unreadable")]  # what was not read yet: lost, counted
    assert plog.dropped == 40 - PROBE_RECORDS
    assert plog._spill.write(_records(1)) == 1
    plog._spill_waiting = True
    plog._resend(time.monotonic())
    assert plog.resent == PROBE_RECORDS + 1  # the next spill is sent as before
    asyncio.run(plog.close(0.5))


def test_the_unread_rest_of_a_spill_file_that_cannot_be_put_back_at_stop_is_counted(tmp_path: Path) -> None:
    plog, dropped = _unreachable_log(tmp_path)
    assert plog._spill.write(_records(30)) == 30
    with plog._spill.path.open("ab") as f:
        f.write(b'{"key": "r30", "value": {"x": 1}}')  # the last line without its line break
    plog._spill_waiting = True
    plog._resend(time.monotonic())  # a probe: the first records are read
    (claim,) = plog._claims
    claim.path.unlink()
    claim.path.mkdir()  # the unread rest can no longer be read back
    asyncio.run(plog.close(0.5))  # (the probe, purged, is spilled again)
    assert dropped == [(31 - PROBE_RECORDS, "spill_unreadable")]


def test_a_spilled_line_that_is_not_a_record_is_counted_as_dropped(tmp_path: Path) -> None:
    plog, dropped = _unreachable_log(tmp_path)
    assert plog._spill.write(_records(2)) == 2
    with plog._spill.path.open("ab") as f:
        f.write(b'{"key": "cut", "val\n[1, 2]\n')  # a line cut short by a crash, and one of another shape
    plog._spill.close()
    plog._spill_waiting = True
    plog._resend(time.monotonic())
    assert plog.resent == 2
    assert plog.dropped == 2
    assert dropped == [(2, "spill_unreadable")]
    asyncio.run(plog.close(0.5))
