"""The return-risk model: is a client a frequent returner? Trained on a point-in-time training set.

    python -m integration.flow.train          # train on the features journal, save, alias prod

Each client is labelled by its current return rate (an outcome known only later) and described by its
features as of a cutoff inside the journal's event times: what the model would have known then. The
model is a typed function (``RiskInput`` rows in, ``RiskOutput`` rows out) with a scikit-learn pipeline as
its artifact. Saved with its context (the training set: journal table and version, the label time;
metrics, parameters, a sample of its inputs), it is served with online features looked up by
``client_id`` and batch-scored on Spark with the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from integration.flow.events import client_features
from thimble.common.features import qualified_table
from thimble.modelops import ModelContext, ModelInfo, Registry, model, training_set

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]
    from pyspark.sql import SparkSession

    from thimble.common.config import ThimbleSettings

MODEL_NAME = "return-risk"
LABELS_TABLE = "return_risk_labels"  # a client, its label time and its label; the training set's spec pins it
FEATURES = ("visits", "orders", "ratings", "total_spent", "avg_order_value", "avg_rating")
Band = Literal["low", "medium", "high"]
RETURNER_RATE = 0.1  # a client who sent back at least this share of what they spent is a frequent returner
CUTOFF_SHARE = 0.5
"""The label time, as a share of the way from the journal's first event to its last: the features are what
was known then, the label (the current return rate) an outcome they do not hold yet."""
PARAMS = {"algorithm": "logistic_regression", "features": list(FEATURES), "returner_rate": RETURNER_RATE}


class RiskInput(BaseModel):
    """A client's features, as the online store and the warehouse hold them."""

    client_id: str
    visits: int = 0
    orders: int = 0
    ratings: int = 0
    total_spent: float = 0.0
    avg_order_value: float = 0.0
    avg_rating: float | None = None


class RiskOutput(BaseModel):
    """How likely the client is to be a frequent returner, and the band the shop acts on."""

    return_risk: float
    band: Band


def _rated(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _rating(value: float | None) -> float:
    return value if value is not None and not math.isnan(value) else 0.0


def feature_matrix(rows: list[RiskInput]) -> list[list[float]]:
    """Model inputs: the features, a missing rating as 0 plus a has-rated flag."""
    return [
        [
            float(r.visits), float(r.orders), float(r.ratings), r.total_spent, r.avg_order_value,
            _rating(r.avg_rating), 1.0 if _rated(r.avg_rating) else 0.0,
        ]
        for r in rows
    ]  # fmt: skip


def band(risk: float) -> Band:
    return "high" if risk >= 0.6 else "medium" if risk >= 0.3 else "low"


@model(MODEL_NAME, features=client_features)
def return_risk(ctx: ModelContext, rows: list[RiskInput]) -> list[RiskOutput]:
    """Probability that the client sends back at least a tenth of what they buy."""
    risks = ctx.artifacts["classifier"].predict_proba(feature_matrix(rows))[:, 1]
    return [RiskOutput(return_risk=round(float(p), 6), band=band(float(p))) for p in risks]


@dataclass
class TrainResult:
    """The saved model and what it was trained on: the journal at its version, as of the cutoff."""

    info: ModelInfo
    training_data: str
    rows: int
    metrics: dict[str, float]


def fit(pdf: pd.DataFrame, seed: int = 7) -> tuple[Any, dict[str, float]]:
    """A scaled logistic regression, and its accuracy and AUC on a held-out quarter."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = [RiskInput.model_validate(r) for r in pdf[["client_id", *FEATURES]].to_dict("records")]
    x, y = feature_matrix(rows), pdf["returned"].tolist()
    if len(set(y)) < 2:
        raise ValueError(
            f"the training data has one class only ({len(y)} clients, returned={y[0]}); generate more events"
        )
    stratify = y if min(y.count(0), y.count(1)) >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=stratify
    )
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000))
    classifier.fit(x_train, y_train)
    metrics = {
        "accuracy": float(accuracy_score(y_test, classifier.predict(x_test))),
        "clients": float(len(y)),
    }
    if len(set(y_test)) == 2:
        metrics["auc"] = float(roc_auc_score(y_test, classifier.predict_proba(x_test)[:, 1]))
    classifier.fit(x, y)
    return classifier, metrics


def train(spark: SparkSession, settings: ThimbleSettings, registry: Registry) -> TrainResult:
    """Train on each client's features at a cutoff (:data:`CUTOFF_SHARE`; clients first seen later are left
    out), labelled by its current return rate; save the model with its training set, point ``prod`` at it."""
    from pyspark.sql import functions as F

    database = settings.warehouse.database
    table, labels_table = client_features.journal_table(database), qualified_table(LABELS_TABLE, database)
    journal = spark.table(table)
    first, last = journal.agg(F.min("event_time"), F.max("event_time")).collect()[0]
    if first is None:
        raise ValueError(f"the journal {table} has no rows yet; load the client features first")
    cutoff = (first + (last - first) * CUTOFF_SHARE).astimezone(UTC)
    returned = (F.col("return_rate") >= RETURNER_RATE).cast("int").alias("returned")
    labels = journal.where("is_current").select("client_id", F.lit(cutoff).alias("at"), returned)
    labels.write.format("delta").mode("overwrite").option("overwriteSchema", "true").saveAsTable(labels_table)
    df, spec = training_set(labels_table, client_features, at="at", spark=spark, settings=settings)
    pdf: pd.DataFrame = df.where("visits IS NOT NULL").toPandas()
    pdf["avg_rating"] = pdf["avg_rating"].astype(object).where(pdf["avg_rating"].notna(), None)
    classifier, metrics = fit(pdf)
    (journaled,) = spec.feature_sets
    training_data = f"{journaled.table}@v{journaled.version}"
    info = registry.save(
        return_risk,
        artifacts={"classifier": classifier},
        training_data=training_data,
        training_set=spec,
        metrics=metrics,
        params={**PARAMS, "cutoff": cutoff.isoformat()},
        sample=pdf[["client_id", *FEATURES]],
        aliases=["prod"],
    )
    return TrainResult(info, f"{training_data} as of {cutoff:%Y-%m-%d %H:%M:%S} UTC", len(pdf), metrics)


def main() -> None:
    """Train on the warehouse of the configured settings and print what was saved."""
    from rich.console import Console

    from thimble.common.cli import user_errors
    from thimble.common.spark import build_spark_session
    from thimble.modelops import load_modelops_settings

    @user_errors
    def run() -> None:
        settings = load_modelops_settings()
        spark = build_spark_session(settings, app_name="thimble-flow-train")
        result = train(spark, settings, Registry.from_config(settings.modelops))
        Console().print(
            f"saved {result.info.ref} (alias prod) trained on {result.training_data} ({result.rows} clients): "
            + ", ".join(f"{k}={v:.3f}" for k, v in result.metrics.items())
        )

    run()


if __name__ == "__main__":
    main()
