"""The one error tree of Cairn; HTTP layers map each class to a 4xx JSON body.

CairnError                      500  (only ever a bug when it reaches a client)
├── ConfigError                 500  bad or missing settings at start-up
├── InvalidInput                400  a request or payload a user sent is wrong
│   ├── EventValidationError    400  an event's data does not match its model
│   └── UnknownEventType        400  no such event type in the catalogue
├── Unauthenticated             401  missing or wrong credentials
├── Forbidden                   403  valid credentials, not allowed
├── NotFound                    404
│   └── ObjectNotFound          404  no object under that key in the store
├── Conflict                    409
│   ├── DocumentUnreadable      409  a stored document no longer matches its model
│   └── PreconditionFailed      412  a conditional write lost (ETag changed / key exists)
├── PayloadTooLarge             413
└── Unavailable                 503  a dependency (broker, store) cannot be reached
"""

from __future__ import annotations

from typing import Any, ClassVar


class CairnError(Exception):
    """Base of every error Cairn raises on purpose."""

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def is_refusal(self) -> bool:
        """A 4xx the request itself caused: retrying it cannot help, so a consumer refuses it.

        A lost conditional write (412) is not one: the document moved under us, and trying
        again can succeed.
        """
        return 400 <= self.http_status < 500 and not isinstance(self, PreconditionFailed)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body an HTTP layer answers with."""
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


class ConfigError(CairnError):
    code = "config_error"


class InvalidInput(CairnError):
    http_status = 400
    code = "invalid_input"


class EventValidationError(InvalidInput):
    code = "event_validation_error"


class UnknownEventType(InvalidInput):
    code = "unknown_event_type"


class Unauthenticated(CairnError):
    http_status = 401
    code = "unauthenticated"


class Forbidden(CairnError):
    http_status = 403
    code = "forbidden"


class NotFound(CairnError):
    http_status = 404
    code = "not_found"


class ObjectNotFound(NotFound):
    code = "object_not_found"


class Conflict(CairnError):
    http_status = 409
    code = "conflict"


class DocumentUnreadable(Conflict):
    code = "document_unreadable"


class PreconditionFailed(Conflict):
    http_status = 412
    code = "precondition_failed"


class PayloadTooLarge(CairnError):
    http_status = 413
    code = "payload_too_large"


class Unavailable(CairnError):
    http_status = 503
    code = "unavailable"
