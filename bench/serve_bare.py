"""The speed limit for ``bench/serve.py``: HTTP plus the model's trees, and nothing else.

A FastAPI app with one ``async def`` endpoint, ``POST /predict``, under one uvicorn worker with
httptools. Each request's body is read and parsed as JSON (any server must do that much), then
the model's LightGBM booster (saved by ``bench/serve.py`` with ``Booster.save_model``) scores a
feature row that was encoded once, ahead of time (``num_threads=1``), and the score is answered
as JSON. No online features, no other ensemble member, no prediction log: what is left is the
cost of the web stack and the trees, which mlprod's ``/predict`` cannot beat.

Run by ``bench/serve.py`` as ``python bench/serve_bare.py --booster FILE --row FILE --port P``;
``--row`` is a JSON list of the encoded row's values (NaN allowed, as Python's json writes it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightgbm
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response


def create_app(booster_file: Path, row_file: Path) -> FastAPI:
    """The bare app: ``/predict`` scores the ready row, ``/health`` answers when loaded."""
    booster = lightgbm.Booster(model_file=str(booster_file))
    row = np.asarray([json.loads(row_file.read_text())], dtype=np.float64)
    app = FastAPI(title="bare LightGBM")

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        json.loads(await request.body())
        score = float(booster.predict(row, num_threads=1)[0])
        return Response(json.dumps({"score": score}), media_type="application/json")

    @app.get("/health")
    async def health() -> Response:
        return Response('{"status":"ok"}', media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--booster", type=Path, required=True, help="a Booster.save_model file")
    parser.add_argument("--row", type=Path, required=True, help="the encoded row, a JSON list")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.booster, args.row),
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        workers=1,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
