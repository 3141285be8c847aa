"""Thimble's local stack (a Kafka broker and Redis on loopback, Spark from PyPI) and its end-to-end checks.

``python integration/stack.py up|status|down|logs|jars`` runs it; every file it writes lives under
``THIMBLE_RUN_DIR`` (default ``./.run``).
"""
