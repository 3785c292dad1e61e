"""SageMaker runtime's error answers on the invocation routes, the way boto3 reads them.

botocore's rest-json parser takes the error code from `X-Amzn-ErrorType`, the message from the
body's `message`, and a modelled error's fields (ModelError: `OriginalStatusCode`,
`OriginalMessage`, `LogStreamArn`) from the body; boto3 then raises `client.exceptions.<code>`
(a ClientError with that code when the service model does not list it). Cairn's own
`{"error", "code", "details"}` stay in the same body, so other clients read what they always did.

  the credential is refused (bad signature/key)  403 InvalidSignatureException
  no credential                                  401 MissingAuthenticationTokenException
  a malformed credential                         401 IncompleteSignatureException
  the key may not invoke the endpoint            403 AccessDeniedException
  unknown endpoint, variant, target model        404 / 400 ValidationError
  body too large                                 413 ValidationError
  the model refused or failed on the input       424 ModelError (OriginalStatusCode: Cairn's 4xx)
  throttled                                      429 ThrottlingException
  not ready yet, a dependency down               503 ServiceUnavailable
  anything else (a bug)                          500 InternalFailure

Only these routes answer so: v2 and v1 keep their protocols' `{"error": "..."}`.
"""

from __future__ import annotations

from typing import Any

from cairn.errors import CairnError, Forbidden, NotFound, Unauthenticated

ACCOUNT = "cairn"


class EndpointNotFound(NotFound):
    """No such endpoint on this gateway (SageMaker: `Endpoint X of account Y not found.`)."""

    code = "endpoint_not_found"

    def __init__(self, endpoint: str) -> None:
        super().__init__(
            f"endpoint {endpoint!r} does not exist or serves no traffic", endpoint=endpoint
        )
        self.sagemaker_message = f"Endpoint {endpoint} of account {ACCOUNT} not found."


class CredentialRejected(CairnError):
    """The authenticator refused the request's credential; keeps the refusal's status and body."""

    code = "credential_rejected"

    def __init__(self, original: CairnError, *, credential_sent: bool) -> None:
        super().__init__(original.message, **original.details)
        self.original = original
        if isinstance(original, Forbidden):
            self.error_type = "InvalidSignatureException"
        elif credential_sent:
            self.error_type = "IncompleteSignatureException"
        else:
            self.error_type = "MissingAuthenticationTokenException"


class ModelFailed(CairnError):
    """The model (SageMaker: the container) refused or failed on the input: a ModelError."""

    http_status = 424
    code = "model_error"

    def __init__(self, original: CairnError, endpoint: str, variant: str) -> None:
        super().__init__(original.message, **original.details)
        self.original = original
        self.log_stream_arn = (
            f"arn:cairn:logs:local:{ACCOUNT}:log-group:/cairn/gateway:log-stream:"
            f"{endpoint}/{variant}"
        )
        self.variant = variant


def _error_type(error: CairnError, status: int) -> str:
    if isinstance(error, Unauthenticated):
        return "MissingAuthenticationTokenException"
    if isinstance(error, Forbidden):
        return "AccessDeniedException"
    if status == 429:
        return "ThrottlingException"
    if status == 503:
        return "ServiceUnavailable"
    if status >= 500:
        return "InternalFailure"
    return "ValidationError"


def sagemaker_error(error: CairnError) -> tuple[int, dict[str, Any], str]:
    """The HTTP status, JSON body and `X-Amzn-ErrorType` SageMaker would answer `error` with."""
    if isinstance(error, ModelFailed):
        original = error.original
        body = original.to_dict()
        body["message"] = (
            f"Received client error ({original.http_status}) from {error.variant} with message "
            f'"{original.message}". See {error.log_stream_arn} for more information.'
        )
        body["OriginalStatusCode"] = original.http_status
        body["OriginalMessage"] = original.message
        body["LogStreamArn"] = error.log_stream_arn
        return 424, body, "ModelError"
    if isinstance(error, CredentialRejected):
        body = error.original.to_dict()
        body["message"] = error.message
        return error.original.http_status, body, error.error_type
    status = error.http_status
    body = error.to_dict()
    body["message"] = getattr(error, "sagemaker_message", error.message)
    return status, body, _error_type(error, status)
