"""Which scenarios exist, and which CI runs."""

from __future__ import annotations

import dataclasses
import itertools

from integration.guarantees._scenario import HandlerKind, Mode, Protocol, Scenario

MODES: tuple[Mode, ...] = ("at-least-once", "exactly-once")
HANDLERS: tuple[HandlerKind, ...] = ("message", "batch")
PROTOCOLS: tuple[Protocol, ...] = ("classic", "consumer")

# A handler slower than max.poll.interval.ms in half the runs: per-message on classic, batch on consumer.
ALL: list[Scenario] = [
    Scenario(mode, handler, protocol, slow=(handler == "message") == (protocol == "classic"))
    for mode, handler, protocol in itertools.product(MODES, HANDLERS, PROTOCOLS)
]

# Every pair of (mode, handler, protocol) values at least once, in four runs; two of them stall a handler.
CI_NAMES = (
    "alo-message-classic-slow",
    "alo-batch-consumer-slow",
    "eos-message-consumer",
    "eos-batch-classic",
)

# Scenarios left out of the CI selection while they fail, with the reason; `--all` still runs them.
KNOWN_FAILING: dict[str, str] = {}


def by_name(name: str) -> Scenario:
    for scenario in ALL:
        if scenario.name == name:
            return scenario
    raise KeyError(f"no scenario {name!r}; there are: {', '.join(s.name for s in ALL)}")


# Broker restarts are slow and one at a time: in CI, two of the four scenarios kill a partition leader.
CI_WITHOUT_LEADER_KILL = ("alo-batch-consumer-slow", "eos-batch-classic")


def ci_selection() -> list[Scenario]:
    chosen = []
    for name in CI_NAMES:
        if name in KNOWN_FAILING:
            continue
        scenario = by_name(name)
        if name in CI_WITHOUT_LEADER_KILL:
            scenario = dataclasses.replace(
                scenario, attacks=tuple(a for a in scenario.attacks if a != "kill_leader")
            )
        chosen.append(scenario)
    return chosen
