"""Errors of the clip collector, under one base class (itself a dojo error).

Each docstring is the default message. ``retryable`` tells a job runner whether
another attempt can help: bad credentials or bad parameters will not get better.
"""

from __future__ import annotations

from actors.exceptions import ConfigError, DojoError


class ClipsError(DojoError):
    """The clip collector failed."""

    retryable = True


class ClipsConfigError(ConfigError, ClipsError):
    """A clip collector setting is missing or invalid; set the DOJO_* variable named in the message."""

    retryable = False


class HelixError(ClipsError):
    """Helix answered with an error."""


class HelixAuthError(HelixError):
    """Helix refused the credentials (401); check DOJO_HELIX_CLIENT_ID and DOJO_HELIX_TOKEN (the token must belong to that client id and not be expired)."""

    status = 401
    retryable = False


class HelixRequestError(HelixError):
    """Helix refused the request's parameters (4xx); the message quotes Helix's reason."""

    status = 400
    retryable = False


class HelixUnavailable(HelixError):
    """Helix kept failing (5xx, dropped connections or 429s) after every retry; try again later."""

    status = 503


class StreamerSourceError(ClipsError):
    """The streamer source is unknown, missing or malformed; use 'db' (the streamers table) or a .csv/.parquet file with a broadcaster_id column."""

    status = 422
    retryable = False
