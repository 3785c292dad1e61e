"""One script package's model server: SageMaker's inference-toolkit contract, in its own process.

Run by the gateway as `python model_server.py MODEL_DIR SOCKET` (by path, so nothing of the
gateway is imported into user code's process). It imports `code/inference.py` (or `inference.py`)
from the model directory, calls `model_fn(model_dir)` once, then binds a Unix socket and answers
one request per connection, one at a time:

  request   {"content_type": str, "accept": str | null, "length": n}\\n  then n bytes of body
  answer    {"status": 200, "content_type": str, "length": n}\\n          then n bytes
            {"status": 4xx/5xx, "error": str, "length": 0}\\n

`input_fn`, `predict_fn` and `output_fn` (or one `transform_fn`) are optional: the defaults are the
toolkit's (JSON, CSV and NPY in and out; `predict_fn` calls the model). The socket lives in a
directory only the gateway's user can enter, which is the credential. The process exits when the
gateway that started it dies.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socketserver
import sys
import threading
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

SCRIPT_FILES = ("code/inference.py", "inference.py")
JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"


class HandlerError(Exception):
    """A request the handlers refuse with a status of their own (415 for a content type)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def default_model_fn(model_dir: str) -> Any:
    raise NotImplementedError("inference.py defines no model_fn(model_dir): provide one")


def default_input_fn(body: bytes, content_type: str) -> Any:
    import numpy as np

    if content_type == JSON:
        return np.asarray(json.loads(body))
    if content_type == CSV:
        return np.genfromtxt(io.StringIO(body.decode()), delimiter=",", ndmin=2)
    if content_type == NPY:
        return np.load(io.BytesIO(body), allow_pickle=False)
    raise HandlerError(
        415, f"content type {content_type!r} is not supported by the default input_fn"
    )


def default_predict_fn(data: Any, model: Any) -> Any:
    if hasattr(model, "predict"):
        return model.predict(data)
    if callable(model):
        return model(data)
    raise NotImplementedError("the model is neither callable nor has predict(): define predict_fn")


def default_output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    import numpy as np

    if accept == JSON:
        value = prediction.tolist() if hasattr(prediction, "tolist") else prediction
        return json.dumps(value).encode(), JSON
    if accept == CSV:
        out = io.StringIO()
        np.savetxt(out, np.atleast_1d(np.asarray(prediction)), delimiter=",", fmt="%s")
        return out.getvalue().encode(), CSV
    if accept == NPY:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(prediction), allow_pickle=False)
        return buffer.getvalue(), NPY
    raise HandlerError(406, f"accept {accept!r} is not supported by the default output_fn")


class Handlers:
    """The user's functions, with the toolkit's defaults for those it leaves out."""

    def __init__(self, module: ModuleType, model_dir: str) -> None:
        self.transform_fn = getattr(module, "transform_fn", None)
        self.input_fn = getattr(module, "input_fn", default_input_fn)
        self.predict_fn = getattr(module, "predict_fn", default_predict_fn)
        self.output_fn = getattr(module, "output_fn", default_output_fn)
        self.model = getattr(module, "model_fn", default_model_fn)(model_dir)

    def __call__(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        if self.transform_fn is not None:
            result = self.transform_fn(self.model, body, content_type, accept)
        else:
            data = self.input_fn(body, content_type)
            prediction = self.predict_fn(data, self.model)
            result = self.output_fn(prediction, accept)
        if isinstance(result, tuple):  # the PyTorch/TF toolkits' (body, content type)
            result, accept = result
        if isinstance(result, str):
            result = result.encode()
        return bytes(result), accept


def load_handlers(model_dir: Path) -> Handlers:
    for name in SCRIPT_FILES:
        path = model_dir / name
        if path.is_file():
            sys.path.insert(0, str(path.parent))  # its sibling modules import as in SageMaker
            spec = importlib.util.spec_from_file_location("inference", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules["inference"] = module
            spec.loader.exec_module(module)
            return Handlers(module, str(model_dir))
    raise FileNotFoundError(f"the package has none of {SCRIPT_FILES}")


def _server(handlers: Handlers) -> type[socketserver.StreamRequestHandler]:
    class Request(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            header = json.loads(self.rfile.readline())
            body = self.rfile.read(int(header["length"]))
            accept = header.get("accept") or JSON
            if accept == "*/*":
                accept = JSON
            try:
                out, out_type = handlers(body, header.get("content_type") or JSON, accept)
                answer: dict[str, Any] = {"status": 200, "content_type": out_type}
            except HandlerError as error:
                out, answer = b"", {"status": error.status, "error": str(error)}
            except Exception as error:  # user code: the request fails, the server carries on
                traceback.print_exc()
                out, answer = b"", {"status": 500, "error": f"{type(error).__name__}: {error}"}
            answer["length"] = len(out)
            self.wfile.write(json.dumps(answer).encode() + b"\n" + out)

    return Request


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def main(argv: list[str]) -> None:
    model_dir, socket_path = Path(argv[0]), argv[1]
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    handlers = load_handlers(model_dir)
    binding = socket_path + ".binding"
    with socketserver.UnixStreamServer(binding, _server(handlers)) as server:
        os.replace(binding, socket_path)  # the path appears once it accepts: the ready signal
        server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
