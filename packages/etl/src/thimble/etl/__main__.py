"""``python -m thimble.etl`` (and the file spark-submit runs on a cluster)."""

from thimble.etl.cli import app

if __name__ == "__main__":
    app()
