"""The Cairn edge agent and the edge package format it verifies.

package   the signed package format: manifest, directive, ed25519 signing and verification
models    loading a verified package: a treelite shared library (ctypes), ONNX or native
store     the agent's own folder: state, packages, partial downloads, the capture outbox
agent     `cairn edge agent`: desired state, download, verify, swap, serve, heartbeat, upload

Small on purpose: the agent imports numpy, httpx, pydantic and `cryptography` (plus onnxruntime
for ONNX packages), never the services, alibi-detect, matplotlib or the platform extras.
"""

AGENT_VERSION = "0.1.0"
