"""The baselines: minimal hand-written FastAPI endpoints serving the same model (no Thimble).

``/predict`` takes every feature in the body; ``/predict-features`` takes a client id and reads the
features from Redis itself, as a careful engineer would write it (one HMGET, JSON-decoded values).
"""

from __future__ import annotations

import os

import joblib
import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, create_model

FEATURES = [f"f{i}" for i in range(20)]
Row = create_model("Row", **{f: (float, ...) for f in FEATURES})  # type: ignore[call-overload]
clf = joblib.load(os.environ["BENCH_MODEL_FILE"])
store = aioredis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
PREFIX = os.environ.get("BENCH_FEATURE_PREFIX", "features")
# At its best: FastAPI's OpenTelemetry check per request off, as the Thimble server has it by default.
app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})


class Keyed(BaseModel):
    client_id: int


@app.post("/predict")
async def predict(row: Row) -> dict[str, float]:  # type: ignore[valid-type]
    return {"score": float(clf.predict_proba([[getattr(row, f) for f in FEATURES]])[0, 1])}


@app.post("/predict-features")
async def predict_features(key: Keyed) -> dict[str, float]:
    values = await store.hmget(f"{PREFIX}:bench-features:{key.client_id}", FEATURES)
    if any(v is None for v in values):
        raise HTTPException(422, "features missing from the online store")
    row = Row(**{f: orjson.loads(v) for f, v in zip(FEATURES, values, strict=True)})
    return {"score": float(clf.predict_proba([[getattr(row, f) for f in FEATURES]])[0, 1])}
