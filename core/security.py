"""Keeping secrets out of logs, manifests and error messages."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def redact_url(url: str) -> str:
    """The URL with its password hidden, safe to log or store (`postgresql://u:***@h/db`)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        # Not a SQLAlchemy URL: drop anything between scheme and '@' to be safe.
        scheme, sep, rest = url.partition("://")
        if sep and "@" in rest:
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return url
