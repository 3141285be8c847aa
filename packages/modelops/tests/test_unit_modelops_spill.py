from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from thimble.modelops._spill import SpillFile


def _records(n: int) -> list[tuple[bytes | None, bytes]]:
    return [(f"r{i}".encode(), orjson.dumps({"request_id": f"r{i}", "x": i})) for i in range(n)]


def test_the_spill_file_keeps_records_up_to_its_bound(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path, max_bytes=200)
    kept = spill.write(_records(10))
    assert 0 < kept < 10
    assert spill.write(_records(1)) == 0
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 200
    ((path, records),) = spill.claim()
    assert records == _records(kept)
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
    claimed = spill.claim()
    assert [records for _, records in claimed] == [[(b"a", b'{"v":1}')]]  # the torn line is skipped
    assert claimed[0][0].name == f"{dead_pid}.jsonl.sending-{os.getpid()}"
    assert not spill.pending()
    assert (tmp_path / f"{os.getppid()}.jsonl").exists()
