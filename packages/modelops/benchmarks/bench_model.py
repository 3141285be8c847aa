"""The benchmark's model: logistic regression on 20 numeric features, as a Thimble model and for baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, create_model

from thimble.modelops import ModelContext, model

FEATURES = [f"f{i}" for i in range(20)]

Row = create_model("Row", **{f: (float, ...) for f in FEATURES})  # type: ignore[call-overload]
KeyedRow = create_model("KeyedRow", client_id=(int, ...), **{f: (float, ...) for f in FEATURES})  # type: ignore[call-overload]


class Score(BaseModel):
    score: float


@model(name="bench")
def bench(ctx: ModelContext, rows: list[Row]) -> list[Score]:  # type: ignore[valid-type]
    x = np.array([[getattr(r, f) for f in FEATURES] for r in rows])
    return [Score(score=p) for p in ctx.artifacts["clf"].predict_proba(x)[:, 1].tolist()]


@model(name="bench-features", features="bench-features", entity_key="client_id")
def bench_features(ctx: ModelContext, rows: list[KeyedRow]) -> list[Score]:  # type: ignore[valid-type]
    x = np.array([[getattr(r, f) for f in FEATURES] for r in rows])
    return [Score(score=p) for p in ctx.artifacts["clf"].predict_proba(x)[:, 1].tolist()]


@model(name="bench-frame", input=Row, output=Score)
def bench_frame(ctx: ModelContext, df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"score": ctx.artifacts["clf"].predict_proba(df[FEATURES].to_numpy())[:, 1]})


def train(seed: int = 0) -> object:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5000, 20))
    y = (x @ rng.normal(size=20) > 0).astype(int)
    return LogisticRegression(max_iter=500).fit(x, y)
