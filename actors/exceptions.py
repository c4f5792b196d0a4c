"""Every error dojo's queue raises, under one base class.

Each class's docstring is its default message; messages say what happened,
what was expected and what to do. ``status`` is the HTTP status the API maps
the error to.
"""

from __future__ import annotations


class DojoError(Exception):
    """Something went wrong in dojo."""

    status = 500

    def __init__(self, message: str | None = None, **context):
        self.message = message or (self.__doc__ or "").strip()
        self.context = context
        super().__init__(self.message)

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": self.message, **self.context}

    def __reduce__(self):
        # Keep the context when the error crosses a Ray process boundary.
        return (_rebuild, (type(self), self.message, self.context))


def _rebuild(cls, message, context):
    return cls(message, **context)


class ConfigError(DojoError):
    """A setting is invalid; fix the DOJO_* variable or CLI flag named in the message."""

    status = 500


class InvalidInput(DojoError):
    """The request is invalid; the message says which field and what is expected."""

    status = 422


class MalformedRequest(InvalidInput):
    """The request body could not be parsed; send valid JSON."""

    status = 400


class PayloadTooLarge(InvalidInput):
    """The payload is larger than the configured limit; store big inputs as objects and pass their keys."""

    status = 413


class UnknownJobType(InvalidInput):
    """No job type of that name is registered; use one of the known types."""


class JobNotFound(DojoError):
    """No job has that id; check the id (ids look like 'j_...')."""

    status = 404


class InvalidTransition(DojoError):
    """The job is not in a state that allows this action."""

    status = 409


class StaleLease(DojoError):
    """The lease is expired or was superseded by a newer attempt; stop working on this job."""

    status = 409


class NotFound(DojoError):
    """Nothing exists at that name."""

    status = 404


class Unauthorized(DojoError):
    """A valid token is required: send 'Authorization: Bearer <token>' (see `dojo token`)."""

    status = 401


class Forbidden(DojoError):
    """The token is valid but does not grant this action."""

    status = 403


class UnknownQueue(NotFound):
    """No queue has that name; create it by enqueueing a job into it (with the API token)."""


class TooManyQueues(DojoError):
    """This dojo has as many queues as DOJO_MAX_QUEUES allows; reuse a queue or raise the limit."""

    status = 409


class QueueUnavailable(DojoError):
    """The queue's actor is restarting; retry the request shortly (nothing was changed)."""

    status = 503
