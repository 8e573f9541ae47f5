"""Consistent fake values: the same original always gets the same fake, in every table, entity
and run.

Faker makes the values; which one a given original gets is chosen by an HMAC of the original
under the masking key. Seeding Faker per value (the textbook way) cost many times what the
rest of masking a value does, so each (provider, locale) gets a pool of values made once per
process from a seed derived from the key, and the HMAC picks from the pool (figures:
benchmarks/README.md, "Fake values"): the same answer as long as the key and the Faker
version are the same. Related fields stay coherent: a fake email is built from the fake
first and last names of the same person (see :meth:`Fakes.email_from`).
"""

from __future__ import annotations

import functools
import hmac
import re
import threading
from collections.abc import Sequence

from faker import Faker

from fabric.crypto import KeyDeriver
from fabric.rules.names import fold

__all__ = ["POOL_SIZE", "Fakes", "known_locale", "known_provider"]

#: Values per pool: variety enough, made once per process in a fraction of a second
#: (benchmarks/README.md, "Fake values").
POOL_SIZE = 2048
_lock = threading.Lock()
_EMAIL_UNSAFE = re.compile(r"[^a-z0-9]+")
_WORDS = re.compile(r"[^\W\d_]+")
#: A word of a name: anything between spaces and commas ("O'Brien", "Katie-May", "J0hn").
_NAME_WORD = re.compile(r"[^\s,]+")
_SEPARATED = re.compile(r"[\s,]")
#: The name providers that fake one part of a name.
_NAME_PARTS = frozenset({"first_name", "last_name"})
#: Titles and suffixes of full names, kept as they are.
_AFFIXES = frozenset(
    [
        "dr",
        "mr",
        "mrs",
        "ms",
        "miss",
        "mx",
        "prof",
        "sir",
        "jr",
        "sr",
        "ii",
        "iii",
        "iv",
        "md",
        "phd",
        "dds",
        "dvm",
    ]
)


#: Longest title or suffix as written ("Prof."): longer words are names.
_AFFIX_LENGTH = max(map(len, _AFFIXES)) + 1


def _affix(word: str) -> str:
    """A word as the title and suffix list spells it: folded, without dots."""
    return fold(word).replace(".", "")


def _same_case(original: str, fake: str) -> str:
    """``fake`` in the case ``original`` is written in (UPPER, lower, or as the pool has it)."""
    if original.isupper():
        return fake.upper()
    if original.islower():
        return fake.lower()
    return fake


#: Domains reserved for examples (RFC 2606): a fake email never reaches a real mailbox.
_DOMAINS = ("example.com", "example.org", "example.net")


#: A pool's values, each with its folded form and the words of that (to compare with
#: originals and avoid an entity's names without folding per value).
_Pool = tuple[tuple[str, str, frozenset[str]], ...]


@functools.lru_cache(maxsize=64)
def _pool(provider: str, locale: str, seed: int) -> _Pool:
    with _lock:
        faker = Faker(locale)
        faker.seed_instance(seed)
        make = getattr(faker, provider)
        values = [str(make()) for _ in range(POOL_SIZE)]
    return tuple((v, fold(v), frozenset(_WORDS.findall(fold(v)))) for v in values)


@functools.lru_cache(maxsize=256)
def known_locale(locale: str) -> bool:
    """Does Faker know this locale?"""
    try:
        Faker(locale)
    except AttributeError:
        return False
    return True


@functools.lru_cache(maxsize=1024)
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

    def value(
        self, provider: str, locale: str, original: object, avoid: frozenset[str] = frozenset()
    ) -> str:
        """The fake ``provider`` value (``first_name``, ``city``...) standing for ``original``.

        Never the original itself, nor a value sharing a word with ``avoid`` (the entity's own
        names, folded): a pool of real-looking names holds real names, and a person drawn
        their own would see it unmasked. The next value of the pool is taken instead.

        Names are one identity wherever they are written: ``first_name`` and ``last_name``
        fake a name by its folded spelling (case, accents and spacing aside), and ``name``
        fakes a full name word by word with those same two pools, in the original's order
        and case, so "Ada Lovelace" in one table and "LOVELACE, Ada" in another become
        "Mary Hughes" and "HUGHES, Mary".
        """
        if provider in _NAME_PARTS:
            return self._name_part(provider, locale, str(original), avoid)
        if provider == "name":
            return self._full_name(locale, str(original), avoid)
        # Compared folded, as the pool's values are: "Zürich" is "zurich" in the pool.
        return self._pick(provider, locale, original, fold(str(original).strip()), avoid)

    def _pick(
        self, provider: str, locale: str, key: object, own: str, avoid: frozenset[str]
    ) -> str:
        pool = _pool(provider, locale, self._seed)
        at = self._index(provider, key)
        for step in range(len(pool)):
            fake, folded, words = pool[(at + step) % len(pool)]
            if folded != own and avoid.isdisjoint(words):
                return fake
        return "*" * len(own)  # every value of the pool is one of the entity's names

    def _name_part(self, provider: str, locale: str, original: str, avoid: frozenset[str]) -> str:
        """A first or last name's fake, word by word ("Mary Ann": two first names)."""
        if original and not _SEPARATED.search(original):  # one word, as most names are
            return self._word(provider, locale, original, avoid)
        if _NAME_WORD.search(original) is None:  # blank: still never the original
            return self._pick(provider, locale, original, original, avoid)
        return _NAME_WORD.sub(lambda m: self._word(provider, locale, m.group(), avoid), original)

    def _word(self, provider: str, locale: str, word: str, avoid: frozenset[str]) -> str:
        """One word of a name faked, keyed by its folded spelling, in its case."""
        key = fold(word)
        return _same_case(word, self._pick(provider, locale, key, key, avoid))

    def _full_name(self, locale: str, original: str, avoid: frozenset[str]) -> str:
        """A full name faked word by word, in place: the family name (the last word, or
        the words before a comma) from the last-name pool, the given names from the
        first-name pool; titles and suffixes (Dr, Jr, III) and punctuation stay."""
        if _NAME_WORD.search(original) is None:  # blank: still never the original
            return self._pick("first_name", locale, original, original, avoid)
        words = [
            m
            for m in _NAME_WORD.finditer(original)
            if len(m.group()) > _AFFIX_LENGTH or _affix(m.group()) not in _AFFIXES
        ]
        comma = original.find(",")
        if comma >= 0:  # "LAST, First Middle"
            family = {m.start() for m in words if m.start() < comma}
        else:
            family = {words[-1].start()} if len(words) >= 2 else set()
        out, at = [], 0
        for match in words:
            provider = "last_name" if match.start() in family else "first_name"
            out.append(original[at : match.start()])
            out.append(self._word(provider, locale, match.group(), avoid))
            at = match.end()
        out.append(original[at:])
        return "".join(out)

    def email_from(
        self, locale: str, first: object, last: object, avoid: frozenset[str] = frozenset()
    ) -> str:
        """A fake email built from the fake first and last names of these originals."""
        parts: Sequence[str] = (
            self.value("first_name", locale, first, avoid),
            self.value("last_name", locale, last, avoid),
        )
        local = ".".join(_EMAIL_UNSAFE.sub("", p.lower()) for p in parts if p) or "someone"
        domain = _DOMAINS[self._index("email-domain", f"{first}\x00{last}") % len(_DOMAINS)]
        return f"{local}@{domain}"
