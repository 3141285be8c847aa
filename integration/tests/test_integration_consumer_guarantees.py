"""thimble-consumer's guarantees attacked on a three-broker cluster: kill -9, leader kill, joins, slow handlers.

The CI selection of the guarantee suite (``python -m integration.guarantees`` runs the same, ``--all``
every scenario and ``--scale N`` a soak); each scenario runs side by side with the others on the session's
cluster, then each test reads its scenario's audit.
"""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from integration._settings import StackSettings
from integration._testing import Stack, main_jars_dir
from integration.guarantees import _catalog, _report
from integration.guarantees.__main__ import run_scenarios
from integration.guarantees._cluster import Cluster
from integration.guarantees._scenario import Result, describe

pytestmark = pytest.mark.integration

SCALE = 1
SEED = 7
CATCH_UP_S = 150.0


@pytest.fixture(scope="module")
def results(kafka_cluster: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    settings = StackSettings(
        run_dir=kafka_cluster.run_dir,
        jars_dir=main_jars_dir().resolve(),
        kafka_port=kafka_cluster.kafka_port,
        redis_port=kafka_cluster.redis_port,
        kafka_brokers=3,
    )
    cluster = Cluster(settings)
    scenarios = _catalog.ci_selection()
    work_dir = tmp_path_factory.mktemp("guarantees")
    done = run_scenarios(
        scenarios, cluster, SCALE, SEED, work_dir, CATCH_UP_S, Console(quiet=True), len(scenarios)
    )
    print("\n" + _report.markdown(done))
    assert cluster.all_up(), "a killed broker did not come back"
    assert cluster.restart_errors == []
    return {result.scenario.name: result for result in done}


@pytest.mark.parametrize("name", [s.name for s in _catalog.ci_selection()])
def test_nothing_lost_nothing_duplicated_dead_letters_exact(results: dict[str, Result], name: str) -> None:
    result = results[name]
    # The whole report, problems and the log lines around them included, is the failure message.
    report = json.dumps(describe(result), indent=1)
    assert result.completed, report
    assert result.lost == 0, report
    if result.scenario.exactly_once:
        assert result.duplicated == 0, report
    assert result.dlq_exact, report
    assert result.orphans == 0, report
    assert result.passed, report
    # The attacks happened: a scenario that killed nothing would prove nothing.
    assert min(result.kills[attack] for attack in ("worker", "supervisor", "join_leave")) >= 1, report
    if "kill_leader" in result.scenario.attacks:
        assert result.kills["broker"] >= 1, report
