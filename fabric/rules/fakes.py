"""Consistent fake values: the same original always gets the same fake, in every table, entity
and run.

Faker makes the values; which one a given original gets is chosen by an HMAC of the original
under the masking key. Seeding Faker per value (the textbook way) cost about 57 us a value,
so each (provider, locale) gets a pool of values made once per process from a seed derived
from the key, and the HMAC picks from the pool: about 2 us a value, the same answer as long
as the key and the Faker version are the same. Related fields stay coherent: a fake email is
built from the fake first and last names of the same person (see :meth:`Fakes.email_from`).
"""

from __future__ import annotations

import functools
import hmac
import re
import threading
from collections.abc import Sequence

from faker import Faker

from fabric.store.crypto import KeyDeriver

__all__ = ["POOL_SIZE", "Fakes", "known_locale", "known_provider"]

#: Values per pool: 2,048 first names are made in about 0.1 s.
POOL_SIZE = 2048
_lock = threading.Lock()
_EMAIL_UNSAFE = re.compile(r"[^a-z0-9]+")
#: Domains reserved for examples (RFC 2606): a fake email never reaches a real mailbox.
_DOMAINS = ("example.com", "example.org", "example.net")


@functools.lru_cache(maxsize=64)
def _pool(provider: str, locale: str, seed: int) -> tuple[str, ...]:
    with _lock:
        faker = Faker(locale)
        faker.seed_instance(seed)
        make = getattr(faker, provider)
        return tuple(str(make()) for _ in range(POOL_SIZE))


def known_locale(locale: str) -> bool:
    """Does Faker know this locale?"""
    try:
        Faker(locale)
    except AttributeError:
        return False
    return True


def known_provider(provider: str, locale: str) -> bool:
    """Is ``provider`` a value-making method of Faker for ``locale``?"""
    if provider.startswith("_") or provider in {"seed", "seed_instance", "seed_locale"}:
        return False
    try:
        method = getattr(Faker(locale), provider)
    except AttributeError:
        return False
    if not callable(method):
        return False
    try:
        method()
    except TypeError:
        return False  # needs arguments: not a provider of plain values
    return True


class Fakes:
    """Fake values for one masking key."""

    def __init__(self, master: bytes) -> None:
        deriver = KeyDeriver(master)
        self._key = deriver.derive("mask:fake")
        self._seed = int.from_bytes(deriver.derive("mask:fake-pools")[:8], "big")

    def _index(self, provider: str, value: object) -> int:
        digest = hmac.digest(self._key, f"{provider}\x00{value}".encode(), "sha256")
        return int.from_bytes(digest[:8], "big") % POOL_SIZE

    def value(self, provider: str, locale: str, original: object) -> str:
        """The fake ``provider`` value (``first_name``, ``city``...) standing for ``original``."""
        return _pool(provider, locale, self._seed)[self._index(provider, original)]

    def email_from(self, locale: str, first: object, last: object) -> str:
        """A fake email built from the fake first and last names of these originals."""
        parts: Sequence[str] = (
            self.value("first_name", locale, first),
            self.value("last_name", locale, last),
        )
        local = ".".join(_EMAIL_UNSAFE.sub("", p.lower()) for p in parts if p) or "someone"
        domain = _DOMAINS[self._index("email-domain", f"{first}\x00{last}") % len(_DOMAINS)]
        return f"{local}@{domain}"
