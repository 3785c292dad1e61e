"""The embedded runtime: discover services, run the broker, supervise every process (`cairn up`)."""

from cairn.runtime.discovery import ServiceSpec, discover_services, import_roots
from cairn.runtime.state import RuntimeState, ServiceState, read_state

__all__ = [
    "RuntimeState",
    "ServiceSpec",
    "ServiceState",
    "discover_services",
    "import_roots",
    "read_state",
]
