"""The guarantee suite: thimble-consumer's promises attacked from outside, against a three-broker cluster.

A producer sends messages with poison of every kind mixed in; ``thimble-consumer run`` processes handle
them into a topic, the online store and landing files while the suite kills workers, supervisors and the
partition leader, makes members join and leave, and stalls a handler past ``max.poll.interval.ms``.
Then it counts, from the topics (``read_committed``), Redis and the landing files: nothing lost, nothing
duplicated in exactly-once mode, and the dead-letter topic holds exactly the poison.

    python -m integration.guarantees [--scale N] [--all] [--scenario NAME ...]
"""
