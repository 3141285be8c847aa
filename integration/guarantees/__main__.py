"""``python -m integration.guarantees``: run the guarantee suite on a three-broker cluster of its own."""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from integration.guarantees import _catalog, _report
from integration.guarantees._cluster import Cluster
from integration.guarantees._scenario import Result, Run, Scenario, to_json
from thimble.common.cli import user_errors

app = typer.Typer(add_completion=False, help=__doc__)
console = Console(highlight=False)


def run_scenarios(
    scenarios: list[Scenario],
    cluster: Cluster,
    scale: int,
    seed: int,
    work_dir: Path,
    drain_timeout_s: float,
    log: Console,
    parallel: int = 1,
) -> list[Result]:
    """Run the scenarios on a running cluster, ``parallel`` at a time; the results in order."""

    def one(index: int, scenario: Scenario) -> Result:
        log.print(f"-- {scenario.name} (scale {scale}) started")
        run = Run(scenario, cluster, work_dir, scale, seed + index)
        try:
            result = run.run(drain_timeout_s)
        except Exception as exc:  # the suite itself failed: report it as this scenario's failure
            result = run.result
            result.problems.append(f"the suite failed: {type(exc).__name__}: {exc}")
        verdict = "pass" if result.passed else "FAIL"
        log.print(f"-- {scenario.name}: {verdict} in {result.seconds:.0f}s; kills {result.kills_text()}")
        for line in _report.problems([result]):
            log.print(f"   {line}")
        return result

    try:
        with ThreadPoolExecutor(max(1, parallel), thread_name_prefix="scenario") as pool:
            return list(pool.map(one, range(len(scenarios)), scenarios))
    finally:
        cluster.wait_restarts()


@app.command()
@user_errors
def main(
    scale: Annotated[
        int, typer.Option(min=1, help="Messages and attacks times N (2,000 messages each).")
    ] = 1,
    everything: Annotated[
        bool,
        typer.Option("--all", help="Every scenario (mode x handler x protocol), known failures included."),
    ] = False,
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", help="Run this scenario (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the workload and of the attack times.")] = 7,
    drain_timeout: Annotated[float, typer.Option(help="Seconds to wait for the group to catch up.")] = 180.0,
    work_dir: Annotated[
        Path | None, typer.Option(help="Keep the cluster, logs and landing files here.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    parallel: Annotated[int, typer.Option(min=1, help="Scenarios run side by side on the cluster.")] = 2,
    list_only: Annotated[bool, typer.Option("--list", help="List the scenarios and exit.")] = False,
) -> None:
    """Attack thimble-consumer's guarantees and print what was lost, duplicated and dead-lettered."""
    if list_only:
        for s in _catalog.ALL:
            ci = "ci" if s.name in {c.name for c in _catalog.ci_selection()} else "  "
            console.print(f"{ci} {s.name}  {_catalog.KNOWN_FAILING.get(s.name, '')}")
        return
    if scenario:
        chosen = [_catalog.by_name(name) for name in scenario]
    else:
        chosen = list(_catalog.ALL) if everything else _catalog.ci_selection()
    keep = work_dir is not None
    root = work_dir or Path(tempfile.mkdtemp(prefix="thimble-guarantees-"))
    cluster = Cluster.on_free_ports(root / "stack", console)
    t0 = time.monotonic()
    try:
        cluster.up()
        console.print(
            f"cluster up in {time.monotonic() - t0:.1f}s: {cluster.bootstrap}, Redis {cluster.redis_url}"
        )
        results = run_scenarios(chosen, cluster, scale, seed, root, drain_timeout, console, parallel)
    finally:
        cluster.down()
    console.print(_report.table(results))
    for line in _report.problems(results):
        console.print(f"  {line}")
    if json_out is not None:
        json_out.write_bytes(to_json(results))
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    raise typer.Exit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    app()
