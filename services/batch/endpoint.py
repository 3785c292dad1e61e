"""Calling a live endpoint through the gateway, as SageMaker's batch transform calls a container.

One `InvokeEndpoint` per mini-batch (its records joined by new lines) with the job's ContentType
and Accept. The gateway's answer is one line per record. What a refusal means depends on who is
at fault:

- the records (400, 413, 415, 422 and any other 4xx not below): a batch is retried one record at
  a time, so only the records the endpoint refuses fail, each with the gateway's reason;
- the platform (5xx, 401/403 of the batch service's own key, 404 of an endpoint not served yet,
  408, 429, a connection error): retried with doubling backoff; after the last attempt the shard
  fails (`GatewayUnavailable`) and is redone by the bus's retries, or by resuming the job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from cairn.errors import Unavailable

log = logging.getLogger("cairn.batch.endpoint")

H_EXPLANATIONS = "X-Amzn-SageMaker-Enable-Explanations"
PLATFORM_STATUSES = frozenset({401, 403, 404, 408, 429})
METADATA_TTL_S = 60.0


class GatewayUnavailable(Unavailable):
    """The gateway could not be reached or kept failing: the shard fails, to be redone."""

    code = "gateway_unavailable"


@dataclass(frozen=True)
class Refusal:
    """The gateway refused a record (a 4xx that is the record's fault), with its reason."""

    status: int
    reason: str


class RecordsRefused(Exception):
    """A 4xx for the records sent (internal: a batch is then retried record by record)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0

    def delay_after(self, attempt: int) -> float:
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))


class EndpointClient:
    """Invokes endpoints on the gateway with the batch service's credential; thread-safe.

    Args:
        base_url: the gateway's URL, asked before each attempt (it may move or appear late).
        token: the credential (`key_id:secret`), asked before each attempt.
        forget_token: called after a 401/403, so the next attempt reads the credential again.
        policy: attempts and backoff for the platform's failures.
        timeout_s: one invocation's time limit.
    """

    def __init__(
        self,
        base_url: Callable[[], str],
        token: Callable[[], str],
        *,
        forget_token: Callable[[], None] = lambda: None,
        policy: RetryPolicy | None = None,
        timeout_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.forget_token = forget_token
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self._http = httpx.Client(timeout=timeout_s, limits=httpx.Limits(max_connections=64))
        self._metadata: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    async def opened(self) -> EndpointClient:
        """The service's resource opener: the client is ready as built."""
        return self

    async def closed(self) -> None:
        """The service's resource closer: its connections go at shutdown."""
        self._http.close()

    def score_lines(
        self,
        endpoint: str,
        payloads: list[bytes],
        *,
        content_type: str,
        accept: str,
        explain: bool = False,
    ) -> list[bytes | Refusal]:
        """One answer line per payload, or the refusal of that payload's record.

        Raises:
            GatewayUnavailable: the platform kept failing (the records are not at fault).
        """

        def invoke(batch: list[bytes]) -> list[bytes]:
            return self._lines(endpoint, batch, content_type, accept, explain)

        try:
            return list(invoke(payloads))
        except RecordsRefused as refused:
            if len(payloads) == 1:
                return [refused.refusal]
        answers: list[bytes | Refusal] = []
        for payload in payloads:
            try:
                answers.extend(invoke([payload]))
            except RecordsRefused as refused:
                answers.append(refused.refusal)
        return answers

    def input_names(self, endpoint: str) -> list[str]:
        """The columns the endpoint's model takes, in order (Open Inference Protocol metadata);
        read again after `METADATA_TTL_S`, since a rollout may change the model."""
        with self._lock:
            cached = self._metadata.get(endpoint)
        if cached is None or time.monotonic() - cached[0] > METADATA_TTL_S:
            path = f"/v2/models/{quote(endpoint, safe='')}"
            response = self._send("GET", path, record_statuses=False)
            cached = (time.monotonic(), dict(response.json()))
            with self._lock:
                self._metadata[endpoint] = cached
        return [str(column["name"]) for column in cached[1].get("inputs", [])]

    def _lines(
        self, endpoint: str, payloads: list[bytes], content_type: str, accept: str, explain: bool
    ) -> list[bytes]:
        headers = {"Content-Type": content_type, "Accept": accept}
        if explain:
            headers[H_EXPLANATIONS] = "true"
        body = b"".join(payload + b"\n" for payload in payloads)
        path = f"/endpoints/{quote(endpoint, safe='')}/invocations"
        response = self._send("POST", path, content=body, headers=headers)
        lines = response.content.rstrip(b"\n").split(b"\n") if response.content.strip() else []
        if len(lines) != len(payloads):
            reason = f"the endpoint answered {len(lines)} lines for {len(payloads)} records"
            raise RecordsRefused(Refusal(response.status_code, reason))
        return [line.rstrip(b"\r") for line in lines]

    def _send(
        self, method: str, path: str, *, record_statuses: bool = True, **request: Any
    ) -> httpx.Response:
        failure = ""
        for attempt in range(1, self.policy.attempts + 1):
            if attempt > 1:
                self.sleep(self.policy.delay_after(attempt - 1))
            try:
                url = self.base_url().rstrip("/") + path
                headers = {**request.pop("headers", {}), "Authorization": f"Bearer {self.token()}"}
                request["headers"] = headers
                response = self._http.request(method, url, **request)
            except (httpx.TransportError, GatewayUnavailable) as error:
                failure = f"cannot reach the gateway: {error}"
            else:
                if response.status_code == 200:
                    return response
                status = response.status_code
                if record_statuses and 400 <= status < 500 and status not in PLATFORM_STATUSES:
                    raise RecordsRefused(Refusal(status, _reason(response)))
                if status in (401, 403):
                    self.forget_token()
                failure = f"the gateway answered {status}: {_reason(response)}"
            log.warning("%s %s failed (attempt %d): %s", method, path, attempt, failure)
        raise GatewayUnavailable(
            f"{method} {path} failed {self.policy.attempts} times; last: {failure}"
        )


def _reason(response: httpx.Response) -> str:
    """The gateway's JSON reason (`error` or `message`), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)[:500]
    return str(body)[:500]
