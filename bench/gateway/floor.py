"""The floor: a bare ASGI app that parses one CSV row and calls `booster.inplace_predict`.

Nothing else (no auth, routing, metrics, capture or batching), served by the same uvicorn as the
gateway, so the gap between the two is what the gateway's features cost.
Usage: python bench/gateway/floor.py MODEL_FILE PORT
"""

from __future__ import annotations

import sys

import numpy as np
import uvicorn
import xgboost
from starlette.types import Receive, Scope, Send

_HEADERS = [(b"content-type", b"text/csv")]


def make_app(model_file: str) -> object:
    """The ASGI callable predicting with the booster in `model_file` on one thread."""
    booster = xgboost.Booster(model_file=model_file)
    booster.set_param({"nthread": 1})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        body: bytes = message.get("body", b"")
        while message.get("more_body"):
            message = await receive()
            body += message.get("body", b"")
        row = np.array([float(cell) for cell in body.split(b",")], dtype=np.float32)
        prediction = booster.inplace_predict(row.reshape(1, -1))
        answer = f"{float(prediction[0])}\n".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


def main() -> None:
    model_file, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(
        make_app(model_file),  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
