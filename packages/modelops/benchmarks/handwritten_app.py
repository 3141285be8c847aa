"""The baseline: a minimal hand-written FastAPI endpoint serving the same model (no Thimble)."""

from __future__ import annotations

import os

import joblib
from fastapi import FastAPI
from pydantic import create_model

FEATURES = [f"f{i}" for i in range(20)]
Row = create_model("Row", **{f: (float, ...) for f in FEATURES})  # type: ignore[call-overload]
clf = joblib.load(os.environ["BENCH_MODEL_FILE"])
app = FastAPI()


@app.post("/predict")
async def predict(row: Row) -> dict[str, float]:  # type: ignore[valid-type]
    return {"score": float(clf.predict_proba([[getattr(row, f) for f in FEATURES]])[0, 1])}
