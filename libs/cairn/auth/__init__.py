"""Locked by default: keys, scopes, principals, request and envelope authentication.

keys            the stored key ring (`platform/keys/`): hashed + sealed secrets, scopes, expiry
sealing         the platform key: seals secrets, derives service credentials
authenticator   a request's credential -> Principal (Bearer, X-API-Key, SigV4)
http            the app-wide guard, `requires(scope)`, audit drafts, `assert_routes_guarded`
signing         signed envelopes on the bus
bootstrap       the first admin credential
"""

from cairn.auth.authenticator import Authenticator
from cairn.auth.http import CurrentPrincipal, current_principal, requires, set_audit_resource
from cairn.auth.principal import Principal
from cairn.auth.scopes import SCOPES, Scope

__all__ = [
    "SCOPES",
    "Authenticator",
    "CurrentPrincipal",
    "Principal",
    "Scope",
    "current_principal",
    "requires",
    "set_audit_resource",
]
