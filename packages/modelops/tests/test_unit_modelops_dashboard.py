from __future__ import annotations

from thimble.modelops._drift import Histogram
from thimble.modelops.dashboard import charts_for
from thimble.modelops.tracking import Record

T0 = 1_760_000_000.0


def _record(at: float, source: str, fractions: list[float]) -> Record:
    hist = Histogram(edges=[0.5], fractions=fractions, count=100)
    return Record(at, "churn", 1, source, "r", {"rows": 100.0, "psi.output.p": 0.1}, {"output.p": hist}, {})


def test_windows_in_the_same_minute_keep_their_own_column_on_a_time_axis() -> None:
    records = [
        _record(T0 - 86_400, "save", [0.5, 0.5]),
        _record(T0, "serve", [0.9, 0.1]),
        _record(T0 + 10, "serve", [0.2, 0.8]),
        _record(T0 + 20, "batch", [0.6, 0.4]),
    ]
    chart = charts_for(records)["distribution"]
    heatmap = chart["data"][0]
    assert chart["layout"]["xaxis"]["type"] == "date"
    assert len(set(heatmap["x"])) == 4
    assert heatmap["z"][0] == [0.5, 0.9, 0.2, 0.6]
    assert heatmap["text"][0] == ["training sample", "serve", "serve", "batch"]
    assert heatmap["zmin"] == 0.0
    assert heatmap["zmax"] == 0.9
    for kind in ("drift", "volume"):
        assert charts_for(records)[kind]["layout"]["xaxis"]["type"] == "date"
