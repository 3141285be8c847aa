"""Thimble's platform end to end, as a data scientist would build it on the local stack.

``python -m integration.flow`` turns a synthetic stream of client events into served predictions:

* :mod:`.generator` produces realistic client events (visits, orders, returns, ratings) to Kafka;
* :mod:`.features` and :mod:`.ab_test` are thimble-consumer apps (client features; A/B test arms);
* ``tables/*.yaml`` are thimble-etl table configs (raw events, features journal, A/B assignments,
  current features);
* :mod:`.train` trains and saves the return-risk model that thimble-modelops serves and batch-scores;
* :mod:`.pipeline` runs the whole flow and :mod:`.summary` prints what each stage did;
* :mod:`.jobs` runs the batch half alone (tables, training, scoring), as docker compose does.
"""
