from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from thimble.common.experiments import arm_of, bucket


def test_a_bucket_is_the_first_eight_bytes_of_the_sha256_of_experiment_and_entity() -> None:
    digest = hashlib.sha256(b"exp-1:c00042").digest()
    assert bucket("exp-1", "c00042") == int.from_bytes(digest[:8], "big") / 2**64
    assert bucket("exp-1", 42) == bucket("exp-1", "42")  # the entity is taken as text


@given(st.text(max_size=20), st.text(max_size=20))
def test_a_bucket_lies_in_the_unit_interval(experiment: str, entity: str) -> None:
    assert 0.0 <= bucket(experiment, entity) < 1.0


@given(st.text(max_size=20), st.floats(min_value=0.0, max_value=1.0))
def test_an_entity_is_in_the_first_arm_exactly_when_its_bucket_is_below_that_arm_s_share(
    entity: str, share: float
) -> None:
    arm = arm_of("exp", entity, [("control", share), ("treatment", 1.0 - share)])
    assert (arm == "control") == (bucket("exp", entity) < share)


def test_shares_split_entities_in_proportion() -> None:
    arms = [("a", 0.2), ("b", 0.3), ("c", 0.5)]
    counts = {"a": 0, "b": 0, "c": 0}
    for i in range(20_000):
        counts[arm_of("split", f"c{i:05d}", arms)] += 1
    assert abs(counts["a"] / 20_000 - 0.2) < 0.02
    assert abs(counts["b"] / 20_000 - 0.3) < 0.02
    assert abs(counts["c"] / 20_000 - 0.5) < 0.02
