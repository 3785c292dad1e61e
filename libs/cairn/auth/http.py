"""Locked by default: one guard on every FastAPI route, scopes declared per route, audit for free.

    router = APIRouter(prefix="/training-jobs")

    @router.post("", dependencies=[requires("train", action="training_job.create")])
    async def create(...): ...

`create_api` installs `guard` as an app-wide dependency, so every route added later runs it. The
guard authenticates the caller (401 without a credential, 403 for a bad one), then checks the
scope the route declares with `requires(...)`; a route that declares none needs `admin`, so a
forgotten declaration fails closed. `assert_routes_guarded` refuses, at start-up, any route that
escapes the guard (a raw Starlette route), probes aside.

A change (any method but GET/HEAD/OPTIONS on a route whose scope is not `read` or `invoke`) leaves
an audit record: the guard drafts it and the edge middleware completes it with the status code
before the response starts, so no change is answered without its record.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import uuid4

from fastapi import Depends, FastAPI, Request
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute
from starlette.routing import Mount

from cairn.audit import AuditRecord, outcome_of
from cairn.auth.authenticator import Authenticator
from cairn.auth.principal import Principal
from cairn.auth.scopes import ADMIN, is_scope
from cairn.errors import ConfigError, Forbidden
from cairn.telemetry import current_correlation_id

UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_UNAUDITED_SCOPES = frozenset({"read", "invoke"})
AUDIT_STATE = "cairn_audit_draft"
AUDIT_RESOURCE_STATE = "cairn_audit_resource"


def set_audit_resource(request: Request, resource: str) -> None:
    """Name what a change made when the path does not (`POST /feature-groups` -> the group)."""
    request.scope.setdefault("state", {})[AUDIT_RESOURCE_STATE] = resource


@dataclass(frozen=True)
class Requirement:
    """What a route needs: a scope, optionally bound to the endpoint named by a path parameter."""

    scope: str
    endpoint_param: str | None = None
    action: str | None = None
    audit: bool = True

    async def __call__(self) -> None:
        """Marker only: `guard` reads the requirement from the route and enforces it."""

    def check(self, principal: Principal, path_params: dict[str, Any]) -> None:
        endpoint = path_params.get(self.endpoint_param) if self.endpoint_param else None
        if not principal.allows(self.scope, endpoint):
            target = f" on endpoint {endpoint!r}" if endpoint else ""
            raise Forbidden(
                f"key {principal.key_id or principal.name} lacks scope {self.scope!r}{target}",
                required_scope=self.scope,
            )


ADMIN_ONLY = Requirement(ADMIN)


def requires(
    scope: str, *, endpoint_param: str | None = None, action: str | None = None, audit: bool = True
) -> Any:
    """Declare the scope a route needs (`dependencies=[requires("deploy")]`).

    Args:
        scope: one of `cairn.auth.scopes.SCOPES`.
        endpoint_param: path parameter holding an endpoint name, for endpoint-bound `invoke` keys.
        action: the audit record's action (default: the route's function name).
        audit: False for hot data-path writes that are not control-plane changes.
    """
    if not is_scope(scope):
        raise ConfigError(f"unknown scope {scope!r}")
    return Depends(Requirement(scope, endpoint_param, action, audit))


def requirement_of(route: APIRoute) -> Requirement:
    for dependency in route.dependencies:
        if isinstance(dependency, DependsParam) and isinstance(dependency.dependency, Requirement):
            return dependency.dependency
    return ADMIN_ONLY


async def authenticate_request(request: Request) -> Principal:
    """The request's principal (cached on the request); 401/403 as `Authenticator` raises."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    authenticator: Authenticator | None = getattr(request.app.state, "authenticator", None)
    if authenticator is None:
        raise ConfigError("this app has no authenticator: build it through cairn.service.Service")
    signed = request.headers.get("authorization", "").startswith("AWS4-")
    body = await request.body() if signed else b""  # only SigV4 signs the body; uploads stream
    # A key-ring miss reads the store: keep that off the event loop.
    principal = await asyncio.to_thread(
        authenticator.authenticate,
        method=request.method,
        raw_path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
        raw_query=request.scope.get("query_string", b"").decode("latin-1"),
        headers={name.lower(): value for name, value in request.headers.items()},
        body=body,
    )
    request.state.principal = principal
    return principal


async def guard(request: Request) -> None:
    """The app-wide dependency: authenticate, check the route's declared scope, draft the audit."""
    if request.url.path in UNAUTHENTICATED_PATHS:
        return
    principal = await authenticate_request(request)
    route = request.scope.get("route")
    requirement = requirement_of(route) if isinstance(route, APIRoute) else ADMIN_ONLY
    if _audited(request.method, requirement):
        request.scope.setdefault("state", {})[AUDIT_STATE] = _draft(request, route, requirement)
    requirement.check(principal, request.path_params)


async def current_principal(request: Request) -> Principal:
    """Route dependency: the authenticated caller."""
    return await authenticate_request(request)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def _audited(method: str, requirement: Requirement) -> bool:
    return (
        requirement.audit
        and method not in _READ_METHODS
        and requirement.scope not in _UNAUDITED_SCOPES
    )


def _draft(request: Request, route: Any, requirement: Requirement) -> AuditRecord:
    principal: Principal = request.state.principal
    action = requirement.action or getattr(route, "name", None) or request.method.lower()
    return AuditRecord(
        principal=principal.name,
        key_id=principal.key_id,
        action=action,
        resource=request.url.path,
        outcome="failed",
        correlation_id=current_correlation_id() or f"http-{uuid4().hex}",
        details={"method": request.method},
    )


def complete_draft(
    draft: AuditRecord, status_code: int, service: str, resource: str | None = None
) -> AuditRecord:
    update: dict[str, Any] = {
        "status_code": status_code,
        "outcome": outcome_of(status_code),
        "service": service,
    }
    if resource:
        update["resource"] = resource
    return draft.model_copy(update=update)


def assert_routes_guarded(app: FastAPI) -> None:
    """Refuse to start when a route escapes the guard (probes aside): no route can forget auth.

    Routes added with the app's decorators or `include_router` carry the app-wide guard; what
    escapes it is a raw Starlette route or mount, or an `APIRoute` appended by hand.
    """
    _check_routes(app.router.routes, top_level=True)


def _check_routes(routes: list[Any], *, top_level: bool) -> None:
    for route in routes:
        path = getattr(route, "path", "")
        nested = getattr(route, "original_router", None)
        if nested is not None:  # FastAPI's included router: its routes inherit the app's guard
            _check_routes(nested.routes, top_level=False)
            continue
        if path in UNAUTHENTICATED_PATHS or path.startswith(("/docs", "/openapi", "/redoc")):
            continue
        if isinstance(route, Mount):
            raise ConfigError(f"mounted app at {path} bypasses authentication")
        if not isinstance(route, APIRoute):
            raise ConfigError(f"route {path} is not a FastAPI route and bypasses authentication")
        guarded = any(
            isinstance(dep, DependsParam) and dep.dependency is guard for dep in route.dependencies
        )
        if top_level and not guarded:
            raise ConfigError(f"route {path} was added without the authentication guard")
