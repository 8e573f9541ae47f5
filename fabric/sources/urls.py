"""Turn user-supplied database URLs into SQLAlchemy URLs, and describe them safely.

Users write ``postgresql://...`` as libpq and most tools spell it, but SQLAlchemy maps that to
psycopg2, which fabric does not install; fabric ships psycopg 3. Every place that opens a
source database goes through :func:`engine_url` so that spelling works everywhere, and every
message that names a URL goes through :func:`describe_url` so passwords never reach a log.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from fabric.errors import SourceError

__all__ = ["describe_url", "engine_url"]

# Drivernames that mean "PostgreSQL, whichever driver": `postgres` is Heroku's and libpq's
# spelling, which SQLAlchemy rejects outright.
_GENERIC_POSTGRES = frozenset({"postgresql", "postgres"})
# `scheme://user:password@` in a string SQLAlchemy could not parse, so URL cannot mask it.
# The password runs to the *last* '@' of the authority: an unescaped '@' or '/' inside it must
# not leave part of it visible.
_PASSWORD_RE = re.compile(r"(?P<head>://[^:/@\s]*:).*@", re.DOTALL)


def engine_url(url: str) -> URL:
    """Parse ``url`` and pick psycopg 3 for a bare ``postgresql://`` URL.

    Raises :class:`SourceError` naming the URL, password masked, if it cannot be parsed.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        # ValueError is what a non-numeric port raises, deep inside URL construction.
        raise SourceError(
            f"cannot parse database URL {_mask_unparsed(url)!r}: expected "
            "dialect[+driver]://[user[:password]@]host[:port]/database, for example "
            "postgresql://user@localhost:5432/shop or sqlite:////abs/path/to/file.db"
        ) from exc
    if parsed.host and "@" in parsed.host:
        # An unescaped '@' in the password: the driver would print the rest as a host name.
        raise SourceError(
            f"cannot use database URL {_mask_unparsed(url)!r}: the password contains '@'; "
            "percent-encode it as %40"
        )
    if parsed.drivername in _GENERIC_POSTGRES:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def describe_url(url: URL | str) -> str:
    """Render ``url`` for messages, with any password replaced by ``***``."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _mask_unparsed(url)


def _mask_unparsed(url: str) -> str:
    """Mask the password of a URL string that SQLAlchemy could not parse."""
    return _PASSWORD_RE.sub(r"\g<head>***@", url)
