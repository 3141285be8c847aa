"""Models the tests save, serve and batch (importable: conftest puts this folder on sys.path)."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from thimble.modelops import ModelContext, model

FEATURES = [f"f{i}" for i in range(4)]


class ChurnInput(BaseModel):
    client_id: int = Field(ge=0, le=10**12)
    orders_7d: int = Field(default=0, ge=0, le=100_000)
    spend_7d: float = Field(ge=-1e6, le=1e6)


class ChurnScore(BaseModel):
    p_churn: float
    high_risk: bool


@model(name="churn", features="client-features")
def churn(ctx: ModelContext, rows: list[ChurnInput]) -> list[ChurnScore]:
    """Churn probability of a client from recent activity."""
    x = np.array([[r.orders_7d, r.spend_7d] for r in rows], dtype="float64")
    probs = ctx.artifacts["clf"].predict_proba(x)[:, 1]
    ctx.params.setdefault("calls", []).append(len(rows))
    return [ChurnScore(p_churn=float(p), high_risk=bool(p > 0.5)) for p in probs]


class Numbers(BaseModel):
    id: int = Field(ge=0, le=10**12)
    f0: float = Field(ge=-1e6, le=1e6)
    f1: float = Field(ge=-1e6, le=1e6)
    f2: float = Field(ge=-1e6, le=1e6)
    f3: float = Field(ge=-1e6, le=1e6)


class Score(BaseModel):
    score: float


@model(name="scorer", input=Numbers, output=Score)
def scorer(ctx: ModelContext, df: pd.DataFrame) -> pd.DataFrame:
    """A DataFrame model: one vectorized call per batch."""
    return pd.DataFrame({"score": ctx.artifacts["clf"].predict_proba(df[FEATURES].to_numpy())[:, 1]})


class Band(StrEnum):
    LOW = "low"
    HIGH = "high"


class Tier(IntEnum):
    BRONZE = 1
    GOLD = 2


class RiskOutput(BaseModel):
    p_churn: float
    band: Literal["low", "medium", "high"]
    level: Literal[1, 2, 3]
    flagged: Literal[True, False]
    band_enum: Band
    tier: Tier | None


@model(name="risk")
def risk(ctx: ModelContext, rows: list[ChurnInput]) -> list[RiskOutput]:
    """Categorical outputs: Literal and Enum fields."""
    out = []
    for r in rows:
        high = r.orders_7d < 5
        out.append(
            RiskOutput(
                p_churn=0.9 if high else 0.1,
                band="high" if high else ("medium" if r.orders_7d < 10 else "low"),
                level=3 if high else 1,
                flagged=high,
                band_enum=Band.HIGH if high else Band.LOW,
                tier=None if r.client_id % 3 == 0 else Tier.GOLD if high else Tier.BRONZE,
            )
        )
    return out


def churn_sample(n: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {"client_id": i, "orders_7d": int(rng.integers(0, 20)), "spend_7d": float(rng.normal(50, 20))}
        for i in range(n)
    ]


def save_churn(registry: Any, clf: Any) -> Any:
    """churn as the next version in ``registry``, alias prod, pickled by value so that any process can load it."""
    return registry.save(
        churn,
        artifacts={"clf": clf},
        training_data="warehouse.client_features@v12",
        metrics={"auc": 0.81},
        sample=churn_sample(),
        aliases=["prod"],
        pickle_function=True,
    )


class Overflow(BaseModel):
    p: float
    share: float | None = None


@model(name="overflow")
def overflow(ctx: ModelContext, rows: list[ChurnInput]) -> list[Overflow]:
    """A finite input, an infinite output: client 7's spend times 1e308."""
    return [Overflow(p=r.spend_7d * (1e308 if r.client_id == 7 else 1.0)) for r in rows]


@model(name="overflow-frame", input=ChurnInput, output=Overflow)
def overflow_frame(ctx: ModelContext, df: pd.DataFrame) -> pd.DataFrame:
    """A DataFrame model: a missing ``share`` (NaN) is a null; client 7's ``p`` is infinite."""
    factor = np.where(df["client_id"] == 7, 1e308, 1.0)
    return pd.DataFrame({"p": df["spend_7d"].abs() * factor + 1.0, "share": np.nan})
