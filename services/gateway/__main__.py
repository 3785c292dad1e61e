"""`python -m services.gateway` runs the inference gateway: one process of its pool
(`services.gateway.instances`); the first one starts the others on the same port.

Every process of the pool counts its own requests, and `GET /metrics` reaches whichever process
the kernel hands the connection to; so the pool keeps its metrics in one folder (prometheus
client's multiprocess mode) and each process answers `/metrics` with the whole pool's. The
primary makes the folder before anything imports prometheus_client; its children inherit it.
"""

import atexit
import os
import shutil
import tempfile

if os.environ.get("CAIRN_GATEWAY_PROCESS_INDEX", "0") == "0":  # the primary: a fresh folder
    _metrics = tempfile.mkdtemp(prefix="cairn-gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics
    atexit.register(shutil.rmtree, _metrics, ignore_errors=True)

# Imported only now: prometheus_client reads the folder when it is first imported.
from services.gateway.instances import serve

serve()
