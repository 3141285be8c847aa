"""The whole platform on the real local stack, smaller than the demo, with assertions at every stage.

One module-scoped run of the flow (generator -> consumer subprocesses -> thimble-etl -> training ->
`thimble-modelops serve` -> batch scoring on the session's Spark), in its own topics, Redis prefix,
database and registry; then each test checks one promise.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from rich.console import Console

from integration.flow.events import names
from integration.flow.generator import GeneratorConfig, SyntheticEvent, generate
from integration.flow.pipeline import (
    CURRENT_TABLE,
    PREDICTION_LOG_TABLE,
    Flow,
    FlowConfig,
    FlowReport,
    FlowSettings,
    next_day,
    table_config,
)
from integration.flow.train import LABELS_TABLE, MODEL_NAME
from thimble.common.config import ThimbleSettings, load_settings
from thimble.modelops import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

DAY = date(2026, 5, 1)
CONFIG = FlowConfig(
    count=1_500, clients=150, rate=None, day=DAY, bad_ratio=0.01, timeout_s=120, sample_clients=4
)
# Its own database each run: over Spark Connect the metastore outlives the run (the stack's server keeps it).
DATABASE = f"flow_e2e_{uuid.uuid4().hex[:8]}"
FEATURE_FIELDS = ("visits", "orders", "returns", "ratings", "total_spent", "total_returned", "avg_rating")


@dataclass
class FlowRun:
    """The finished flow, with its model server still up."""

    flow: Flow
    report: FlowReport
    settings: FlowSettings
    events: list[SyntheticEvent]

    def predict(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import urllib.request

        request = urllib.request.Request(
            f"{self.report.server_url}/v1/models/{MODEL_NAME}@prod/predict",
            orjson.dumps(rows),
            {"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = orjson.loads(response.read())
        return answer


def _delete_topics(kafka_config: dict[str, Any], topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka_config)
    existing = admin.list_topics(timeout=10).topics
    doomed = [t for t in topics if t in existing]
    if doomed:
        for future in admin.delete_topics(doomed).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


@pytest.fixture(scope="module")
def flow_run(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_config: dict[str, Any],
    redis_url: str,
    spark: Any,
    spark_settings: ThimbleSettings,
) -> Iterator[FlowRun]:
    import redis

    run_id = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("flow")
    prefix = f"e2e-{run_id}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("THIMBLE_FLOW_EVENTS_TOPIC", f"{prefix}-events")
        env.setenv("THIMBLE_FLOW_FEATURES_TOPIC", f"{prefix}-features")
        env.setenv("THIMBLE_FLOW_ASSIGNMENTS_TOPIC", f"{prefix}-assignments")
        env.setenv("THIMBLE_FLOW_PREDICTIONS_TOPIC", f"{prefix}-predictions")
        warehouse = spark_settings.warehouse.model_dump()
        settings = load_settings(
            FlowSettings,
            overrides={
                "kafka": {"bootstrap_servers": kafka_config["bootstrap.servers"]},
                "warehouse": {**warehouse, "landing": str(root / "landing"), "database": DATABASE},
                "online_store": {"url": redis_url, "key_prefix": prefix},
                "modelops": {"registry": str(root / "models")},
            },
        )
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
        registry = Registry(str(root / "models"))
        flow = Flow(CONFIG, settings, Console(file=io.StringIO()), spark, registry, root / "logs")
        topics = [
            names.events_topic, names.features_topic, names.features_dlq,
            names.assignments_topic, names.assignments_dlq, names.predictions_topic,
        ]  # fmt: skip
        try:
            flow.check_stack()
            consumers = flow.start_consumers()
            flow.produce_events()
            flow.wait_for_consumers(consumers)
            flow.load_warehouse()
            flow.check_skew()
            flow.train_model()
            flow.serve_model()
            flow.score_batch()
            flow.load_prediction_log()
            events = generate(
                GeneratorConfig(CONFIG.count, CONFIG.clients, DAY, CONFIG.seed, bad_ratio=CONFIG.bad_ratio)
            )
            yield FlowRun(flow, flow.report, settings, events)
        finally:
            flow.close()
            _delete_topics(kafka_config, topics)
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


def _dead_letters(kafka_config: dict[str, Any], topic: str, expected: int) -> list[Any]:
    from thimble.consumer import DeadLetter
    from thimble.testing import TopicReader

    with TopicReader(kafka_config, topic) as reader:
        records = reader.wait_for(expected, 60)
        return [DeadLetter.from_record(msg.key(), msg.value(), msg.headers() or []) for msg in records]


def test_every_produced_event_became_a_feature_row_or_a_dead_letter(flow_run: FlowRun) -> None:
    produced = flow_run.report.produced
    assert produced is not None
    features = flow_run.report.consumers["features"]
    assert produced.produced == CONFIG.count
    assert produced.bad > 0
    assert features.outputs + features.dead_letters == produced.produced
    assert features.dead_letters == produced.bad
    assert features.processed_metric == features.outputs
    assert features.dead_lettered_metric == features.dead_letters
    assert features.exit_code == 0


def test_a_poison_event_lands_in_the_dead_letter_topic_with_its_reason(
    flow_run: FlowRun, kafka_config: dict[str, Any]
) -> None:
    bad = {e.value: e for e in flow_run.events if e.kind != "valid"}
    letters = _dead_letters(kafka_config, names.features_dlq, len(bad))
    assert {letter.value for letter in letters} == set(bad)
    for letter in letters:
        event = bad[letter.value]
        assert letter.original_topic == names.events_topic
        assert letter.key == event.key.encode()
        assert letter.error_class.endswith("ValidationError")
        assert letter.error_message
        assert letter.error_stage == ("decode" if event.kind == "malformed" else "validate")
    truncated = next(letter for letter in letters if bad[letter.value].problem == "truncated JSON")
    assert "json" in truncated.error_message.lower()


def test_each_new_client_got_one_sticky_arm(flow_run: FlowRun) -> None:
    import redis

    from integration.flow.ab_test import SeenClient, arm_of

    clients = set()
    for event in flow_run.events:
        with contextlib.suppress(ValidationError):
            clients.add(SeenClient.model_validate_json(event.value).client_id)
    ab = flow_run.report.consumers["ab-test"]
    assert ab.outputs == len(clients)
    store = redis.Redis.from_url(flow_run.settings.online_store.url)
    prefix = flow_run.settings.online_store.key_prefix
    for client in clients:
        stored = store.hgetall(f"{prefix}:{names.assignment_set}:{client}")
        assert orjson.loads(stored[b"arm"]) == arm_of(client)
    store.close()
    table = flow_run.report.tables["ab_assignments"]
    assert table.committed
    assert table.inserted == len(clients)


def test_the_warehouse_journal_holds_what_the_online_store_holds(flow_run: FlowRun, spark: Any) -> None:
    import redis

    rows = spark.table(f"{DATABASE}.client_features").filter("is_current").collect()
    assert rows
    store = redis.Redis.from_url(flow_run.settings.online_store.url)
    prefix = flow_run.settings.online_store.key_prefix
    pipe = store.pipeline(transaction=False)
    for row in rows:
        pipe.hgetall(f"{prefix}:{names.feature_set}:{row['client_id']}")
    online = pipe.execute()
    store.close()
    assert len(list(filter(None, online))) == len(rows)
    for row, stored in zip(rows, online, strict=True):
        values = {k.decode(): orjson.loads(v) for k, v in stored.items()}
        for field in FEATURE_FIELDS:
            assert values[field] == pytest.approx(row[field]), (row["client_id"], field)
        event_time = row["event_time"].replace(tzinfo=UTC)
        assert int(values["_event_time"]) == int(event_time.timestamp() * 1000)
    history = flow_run.report.tables["client_features"]
    assert history.rows_read == flow_run.report.consumers["features"].outputs
    assert history.rows_quarantined == 0


def test_the_skew_check_finds_no_skew_between_the_online_store_and_the_journal(
    flow_run: FlowRun, spark: Any
) -> None:
    skew = flow_run.report.skew
    assert skew is not None
    assert skew.entities == spark.table(f"{DATABASE}.client_features").filter("is_current").count()
    assert skew.skewed == []
    assert skew.agreeing == skew.entities


def test_the_model_leads_back_to_the_event_offsets_its_training_data_was_loaded_up_to(
    flow_run: FlowRun, spark: Any
) -> None:
    from integration.flow.pipeline import group_of
    from thimble.consumer import group_lag
    from thimble.modelops.lineage import TableLineage, model_lineage

    found = model_lineage(
        flow_run.flow.registry, f"{MODEL_NAME}@prod", spark=spark, settings=flow_run.settings
    )

    def every(tables: list[TableLineage]) -> list[TableLineage]:
        return [t for table in tables for t in [table, *every(table.upstream)]]

    (journal,) = [t for t in every(found.tables) if t.table == f"{DATABASE}.client_features"]
    assert journal.role == f"feature set {names.feature_set}"  # the training set's own table, not upstream
    assert journal.version == flow_run.report.tables["client_features"].version
    assert set(journal.offsets) == {names.events_topic}
    lag = group_lag(flow_run.settings, group_of("features"), [names.events_topic])
    committed = {p.partition: p.committed or 0 for p in lag}
    assert flow_run.report.produced is not None
    bad = flow_run.report.produced.bad  # the last events of a partition may be dead letters, not features
    assert set(journal.offsets[names.events_topic]) == set(committed)
    for partition, offset in journal.offsets[names.events_topic].items():
        assert committed[partition] - 1 - bad <= offset <= committed[partition] - 1, partition


def test_broken_events_are_quarantined_by_the_raw_events_table(flow_run: FlowRun) -> None:
    produced = flow_run.report.produced
    assert produced is not None
    raw = flow_run.report.tables["client_events"]
    assert raw.rows_read == produced.produced
    assert any(e.problem == "single-quoted JSON" for e in flow_run.events)
    assert raw.rows_quarantined == produced.bad
    assert raw.inserted == raw.rows_read - raw.rows_quarantined


def test_the_model_is_saved_with_its_training_set_and_aliased_prod(flow_run: FlowRun) -> None:
    trained = flow_run.report.model
    assert trained is not None
    info = flow_run.flow.registry.info(f"{MODEL_NAME}@prod")
    assert info.version == trained.info.version
    journal = f"{DATABASE}.client_features@v{flow_run.report.tables['client_features'].version}"
    spec = info.context.training_set
    assert spec is not None
    assert spec.at == "at"
    assert spec.labels is not None
    assert spec.labels.table == f"{DATABASE}.{LABELS_TABLE}"
    assert spec.labels.version is not None  # pinned: the set rebuilds from the spec alone
    assert [f"{fs.table}@v{fs.version}" for fs in spec.feature_sets] == [journal]
    assert str(info.context.training_data) == journal
    assert trained.training_data.startswith(f"{journal} as of ")
    assert 0.0 <= info.context.metrics["accuracy"] <= 1.0
    assert info.sample_rows > 0


def test_the_model_learns_from_the_features_each_client_had_at_the_cutoff(
    flow_run: FlowRun, spark: Any
) -> None:
    from pyspark.sql import functions as F

    from thimble.modelops import training_set_from_spec

    trained = flow_run.report.model
    assert trained is not None
    context = flow_run.flow.registry.info(f"{MODEL_NAME}@prod").context
    assert context.training_set is not None
    cutoff = datetime.fromisoformat(context.params["cutoff"])
    journal = spark.table(f"{DATABASE}.client_features")
    known = journal.where(F.col("event_time") <= F.lit(cutoff))
    assert journal.where(F.col("event_time") > F.lit(cutoff)).count() > 0  # events the model did not see
    as_of = known.groupBy("client_id").agg(F.max_by("visits", "event_time").alias("visits"))
    expected = {r["client_id"]: r["visits"] for r in as_of.collect()}
    rebuilt, _ = training_set_from_spec(context.training_set, spark=spark)
    assert {r["client_id"]: r["visits"] for r in rebuilt.where("visits IS NOT NULL").collect()} == expected
    assert trained.rows == len(expected)
    current = {r["client_id"]: r["visits"] for r in journal.where("is_current").collect()}
    assert any(current[client] != visits for client, visits in expected.items())  # not today's features


def test_served_and_batch_predictions_agree_for_every_client(flow_run: FlowRun, spark: Any) -> None:
    batch = flow_run.report.batch
    assert batch is not None
    scored = {r["client_id"]: r for r in spark.table(batch.output_table).collect()}
    assert len(scored) == batch.rows == flow_run.report.tables[CURRENT_TABLE].inserted
    clients = sorted(scored)
    answer = flow_run.predict([{"client_id": c} for c in clients])
    assert answer["version"] == batch.model_version
    for client, served in zip(clients, answer["predictions"], strict=True):
        assert served["return_risk"] == pytest.approx(scored[client]["return_risk"], abs=1e-9), client
        assert served["band"] == scored[client]["band"]
    assert flow_run.report.served
    assert flow_run.report.first_event_to_prediction_s is not None


def test_served_predictions_flow_back_into_the_warehouse(flow_run: FlowRun, spark: Any) -> None:
    ids = flow_run.report.served_request_ids
    assert len(ids) == 1  # the flow asks about its sample clients in one request
    result = flow_run.report.tables[PREDICTION_LOG_TABLE]
    assert result.committed
    assert (result.rows_read, result.inserted, result.rows_quarantined) == (1, 1, 0)
    rows = {r["request_id"]: r for r in spark.table(f"{DATABASE}.{PREDICTION_LOG_TABLE}").collect()}
    assert set(rows) == set(ids)
    record = rows[ids[0]]
    served = flow_run.report.served
    assert (record["model"], record["version"]) == (MODEL_NAME, served[0]["model_version"])
    assert [i["client_id"] for i in record["inputs"]] == [s["client_id"] for s in served]
    assert all(i["visits"] is not None for i in record["inputs"])  # logged with their online features
    assert [o.asDict() for o in record["outputs"]] == [
        {"return_risk": s["return_risk"], "band": s["band"]} for s in served
    ]


def test_a_failed_quality_gate_leaves_the_table_version_unchanged(flow_run: FlowRun, spark: Any) -> None:
    from thimble.etl import run_table, table_version
    from thimble.etl.config import CheckConfig

    config = table_config(CURRENT_TABLE)
    impossible = CheckConfig(metric="row_count", max=0, name="no client at all")
    config = config.model_copy(
        update={"quality": config.quality.model_copy(update={"checks": [*config.quality.checks, impossible]})}
    )
    before = table_version(CURRENT_TABLE, spark=spark, settings=flow_run.settings)
    result = run_table(config, spark=spark, settings=flow_run.settings)
    assert result.status == "blocked"
    assert any(c.name == "no client at all" and c.status == "fail" for c in result.checks)
    assert table_version(CURRENT_TABLE, spark=spark, settings=flow_run.settings) == before == result.version


def test_the_next_run_appends_the_next_day(flow_run: FlowRun) -> None:
    assert next_day(flow_run.settings) == DAY + timedelta(days=1)
    landed = sorted(
        p.name for p in (Path(flow_run.settings.warehouse.landing) / names.features_dataset).iterdir()
    )
    assert landed == [f"date={DAY.isoformat()}"]


def test_the_summary_shows_every_stage(flow_run: FlowRun) -> None:
    from integration.flow.summary import render

    out = io.StringIO()
    render(flow_run.report, Console(file=out, width=200, color_system=None), 1.0)
    text = out.getvalue()
    assert "processed + dead-lettered = produced" in text
    for table in ("client_events", "client_features", "ab_assignments", CURRENT_TABLE):
        assert f"{table} rows read" in text
    assert "first event → prediction" in text
    assert (
        f"{MODEL_NAME}@{flow_run.report.model.info.version if flow_run.report.model else '?'} = prod" in text
    )
    assert flow_run.report.model is not None
    assert f"trained on {flow_run.report.model.training_data} (" in text
    assert text.count(" yes ") == len(flow_run.report.served)
    assert "served predictions logged" in text
    assert "no skew" in text
