"""Masking operators: each compiles its parameters once into a plain function of one value.

Operators never see YAML: the policy loader validates the parameters into the models below and
hands them here, and the returned callables run per value on the hot path. A mask function
gets the value and a :class:`MaskContext` (the entity and the row being masked), which most
operators ignore and a few need: ``date_shift`` shifts by an offset of the entity, ``fake``
builds an email from the same row's names, ``free_text`` masks the entity's own names.

Keyed operators derive their own key from the master key (HKDF, one purpose each), so a
hash can never be turned into a token key or the other way round.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from base64 import b32encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from fabric.config.validation import StrictModel
from fabric.crypto import KeyDeriver
from fabric.rules.fakes import Fakes, known_locale, known_provider
from fabric.rules.ff1 import DIGITS, FF1
from fabric.rules.freetext import find_pii
from fabric.rules.names import EntityNames
from fabric.rules.tokens import Tokenizer, masking_key_id

__all__ = [
    "FPE_MIN_DOMAIN",
    "AnyOp",
    "FpeOp",
    "KeepOp",
    "MaskContext",
    "MaskFunction",
    "MaskingKeys",
    "NullOp",
    "OperatorSpec",
    "RedactOp",
    "TokenizeOp",
    "compile_operator",
    "fpe_reveal",
]


_NO_NAMES = EntityNames()


@dataclass(slots=True)
class MaskContext:
    """What a mask function may look at besides the value: the entity and the original row."""

    entity_type: str = ""
    entity_id: str = ""
    row: Mapping[str, Any] = field(default_factory=dict)
    #: the entity's own names, for ``free_text``; ``fake`` never hands it one of them
    names: EntityNames = _NO_NAMES


MaskFunction = Callable[[Any, MaskContext], Any]

#: FPE refuses domains smaller than this (radix ** length): small domains are easy to walk.
FPE_MIN_DOMAIN = 1_000_000

_ALPHABETS = {
    "digits": "0123456789",
    "lower": "abcdefghijklmnopqrstuvwxyz",
    "upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "alnum_lower": "0123456789abcdefghijklmnopqrstuvwxyz",
    "alnum_upper": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
}


class KeepOp(StrictModel):
    """Leave the value as it is."""

    op: Literal["keep"]


class NullOp(StrictModel):
    """Replace the value with null."""

    op: Literal["null"]


class RedactOp(StrictModel):
    """Replace the value with a fixed text."""

    op: Literal["redact"]
    replacement: str = "[REDACTED]"


class HashOp(StrictModel):
    """Keyed hash (HMAC-SHA256 under a key of its own): equal inputs give equal outputs."""

    op: Literal["hash"]
    encoding: Literal["hex", "base32"] = "hex"
    truncate: int | None = Field(None, ge=8, le=64)


class PartialOp(StrictModel):
    """Keep the first/last characters, mask the rest; emails keep their domain if asked."""

    op: Literal["partial"]
    keep_first: int = Field(0, ge=0, le=64)
    keep_last: int = Field(0, ge=0, le=64)
    mask_char: str = Field("*", min_length=1, max_length=1)
    keep_domain: bool = False


class TokenizeOp(StrictModel):
    """A deterministic, unique, reversible token (AES-SIV) per value within a domain."""

    op: Literal["tokenize"]
    domain: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="values tokenize alike across columns of one domain (default: the "
        "column's name, so 'email' in every table shares tokens)",
    )


class FpeOp(StrictModel):
    """Format-preserving encryption (FF1): characters of the alphabet stay in it, others stay."""

    op: Literal["fpe"]
    alphabet: str = Field(
        "digits",
        description="digits, lower, upper, alnum_lower, alnum_upper, or the characters "
        "themselves (2 to 36 distinct)",
    )
    keep_first: int = Field(0, ge=0, le=64)
    keep_last: int = Field(0, ge=0, le=64)
    tweak: str | None = Field(None, description="default: the column's name")
    min_length: int | None = Field(
        None, ge=1, le=256, description="fewest characters encrypted; shorter values are masked"
    )

    @cached_property
    def characters(self) -> str:
        """The alphabet's characters."""
        return _ALPHABETS.get(self.alphabet, self.alphabet)

    @cached_property
    def shortest(self) -> int:
        """The fewest characters FF1 encrypts: a domain of at least a million values."""
        return self.min_length or math.ceil(
            math.log(FPE_MIN_DOMAIN) / math.log(len(self.characters))
        )

    @model_validator(mode="after")
    def _check(self) -> FpeOp:
        chars = self.characters
        if len(set(chars)) != len(chars) or not 2 <= len(chars) <= len(DIGITS):
            raise ValueError(
                "alphabet must be digits, lower, upper, alnum_lower, alnum_upper or 2 to 36 "
                f"distinct characters (got {len(chars)} characters)"
            )
        if len(chars) ** self.shortest < FPE_MIN_DOMAIN:
            raise ValueError(
                f"FPE domain too small: {len(chars)}^{self.shortest} = "
                f"{len(chars) ** self.shortest:,} values, under {FPE_MIN_DOMAIN:,}; raise "
                "min_length or use a larger alphabet"
            )
        return self


class FakeOp(StrictModel):
    """A Faker value, the same for the same original in every table, entity and run."""

    op: Literal["fake"]
    provider: str = Field(description="a Faker provider: first_name, last_name, city, email...")
    locale: str = "en_US"
    from_: dict[Literal["first_name", "last_name"], str] | None = Field(
        None,
        alias="from",
        description="email only: build it from the fake names of these columns of the row",
    )


class DateShiftOp(StrictModel):
    """Shift dates by a per-entity offset: intervals within one entity are kept."""

    op: Literal["date_shift"]
    max_days: int = Field(365, ge=1, le=36_500)


class GeneralizeOp(StrictModel):
    """Coarsen: dates to year, month or decade, numbers to ranges, codes to a prefix."""

    op: Literal["generalize"]
    to: Literal["year", "month", "decade", "range", "prefix"]
    size: int | None = Field(None, ge=2, description="range: the width of each range")
    keep: int | None = Field(None, ge=0, le=64, description="prefix: characters kept")

    @model_validator(mode="after")
    def _check(self) -> GeneralizeOp:
        if self.to == "range" and self.size is None:
            raise ValueError("to: range needs size (the width of each range, e.g. 10)")
        if self.to == "prefix" and self.keep is None:
            raise ValueError("to: prefix needs keep (how many characters to keep)")
        return self


InTextOp = Annotated[NullOp | RedactOp | HashOp | PartialOp | TokenizeOp, Field(discriminator="op")]


class FreeTextOp(StrictModel):
    """Find emails, phones, cards (Luhn), IBANs and the entity's names in text; mask each."""

    op: Literal["free_text"]
    email: InTextOp = RedactOp(op="redact", replacement="[EMAIL]")
    phone: InTextOp = RedactOp(op="redact", replacement="[PHONE]")
    card: InTextOp = RedactOp(op="redact", replacement="[CARD]")
    iban: InTextOp = RedactOp(op="redact", replacement="[IBAN]")
    name: InTextOp = RedactOp(op="redact", replacement="[NAME]")
    region: str = Field("US", min_length=2, max_length=2, description="for phone numbers")


AnyOp = (
    KeepOp
    | NullOp
    | RedactOp
    | HashOp
    | PartialOp
    | TokenizeOp
    | FpeOp
    | FakeOp
    | DateShiftOp
    | GeneralizeOp
    | FreeTextOp
)
OperatorSpec = Annotated[AnyOp, Field(discriminator="op")]


class MaskingKeys:
    """The keyed parts operators share, made once per master key and reused."""

    def __init__(self, master: bytes) -> None:
        self.master = master
        self._deriver = KeyDeriver(master)
        self.key_id = masking_key_id(master)
        self._tokenizers: dict[str, Tokenizer] = {}

    def derive(self, purpose: str) -> bytes:
        """A 256-bit key for one purpose."""
        return self._deriver.derive(purpose)

    def tokenizer(self, domain: str) -> Tokenizer:
        """The tokenizer of one domain."""
        found = self._tokenizers.get(domain)
        if found is None:
            found = self._tokenizers[domain] = Tokenizer(self.master, domain)
        return found

    @cached_property
    def fakes(self) -> Fakes:
        """Consistent fake values."""
        return Fakes(self.master)

    @cached_property
    def ff1_key(self) -> bytes:
        """The AES-256 key of format-preserving encryption."""
        return self.derive("mask:fpe")


def _partial(spec: PartialOp) -> MaskFunction:
    first, last, char = spec.keep_first, spec.keep_last, spec.mask_char

    def mask(value: Any, ctx: MaskContext) -> Any:
        text = str(value)
        suffix = ""
        if spec.keep_domain and "@" in text:
            text, _, domain = text.rpartition("@")
            suffix = "@" + domain
        # Never return the original: if the kept parts would cover the whole value, mask all.
        if first + last >= len(text):
            return char * len(text) + suffix
        end = text[len(text) - last :] if last else ""
        return text[:first] + char * (len(text) - first - last) + end + suffix

    return mask


def _hash(spec: HashOp, key: bytes) -> MaskFunction:
    digestmod = hashlib.sha256
    inner = hmac.new(key, digestmod=digestmod)
    hex_out, cut = spec.encoding == "hex", spec.truncate

    def mask(value: Any, ctx: MaskContext) -> Any:
        mac = inner.copy()  # copying the keyed state skips re-deriving the key pads per value
        mac.update(str(value).encode())
        text = mac.hexdigest() if hex_out else b32encode(mac.digest()).decode().rstrip("=")
        return text[:cut] if cut else text

    return mask


def _fpe(spec: FpeOp, keys: MaskingKeys, column: str) -> MaskFunction:
    chars = spec.characters
    radix = len(chars)
    cipher = FF1(keys.ff1_key, radix)
    tweak = (spec.tweak if spec.tweak is not None else column).encode()
    to_numeral = {c: DIGITS[i] for i, c in enumerate(chars)}
    from_numeral = {DIGITS[i]: c for i, c in enumerate(chars)}
    first, last, shortest = spec.keep_first, spec.keep_last, max(spec.shortest, cipher.min_length())

    def mask(value: Any, ctx: MaskContext) -> Any:
        text = str(value)
        at = [i for i, c in enumerate(text) if c in to_numeral]
        middle = at[first : len(at) - last] if last else at[first:]
        if len(middle) < shortest:
            # Too few characters for a domain of a million values: hide them all instead.
            out = list(text)
            for i in at:
                out[i] = "*"
            return "".join(out)
        numerals = "".join(to_numeral[text[i]] for i in middle)
        encrypted = cipher.encrypt(numerals, tweak)
        out = list(text)
        for i, numeral in zip(middle, encrypted, strict=True):
            out[i] = from_numeral[numeral]
        return "".join(out)

    return mask


def fpe_reveal(spec: FpeOp, keys: MaskingKeys, column: str) -> Callable[[str], str]:
    """The inverse of an ``fpe`` mask: a masked value back to the original.

    Raises (from the returned function):
        ValueError: the value is too short to have been encrypted (it was masked with ``*``).
    """
    chars = spec.characters
    cipher = FF1(keys.ff1_key, len(chars))
    tweak = (spec.tweak if spec.tweak is not None else column).encode()
    to_numeral = {c: DIGITS[i] for i, c in enumerate(chars)}
    from_numeral = {DIGITS[i]: c for i, c in enumerate(chars)}
    first, last, shortest = spec.keep_first, spec.keep_last, max(spec.shortest, cipher.min_length())

    def reveal(masked: str) -> str:
        at = [i for i, c in enumerate(masked) if c in to_numeral]
        middle = at[first : len(at) - last] if last else at[first:]
        if len(middle) < shortest:
            raise ValueError("too short to have been encrypted: it was masked, not encrypted")
        decrypted = cipher.decrypt("".join(to_numeral[masked[i]] for i in middle), tweak)
        out = list(masked)
        for i, numeral in zip(middle, decrypted, strict=True):
            out[i] = from_numeral[numeral]
        return "".join(out)

    return reveal


def _fake(spec: FakeOp, keys: MaskingKeys, column: str) -> MaskFunction:
    if not known_locale(spec.locale):
        raise ValueError(f"unknown Faker locale '{spec.locale}'")
    fakes, locale, provider = keys.fakes, spec.locale, spec.provider
    if spec.from_:
        if provider != "email":
            raise ValueError("'from' builds emails only (provider: email)")
        first_col = spec.from_.get("first_name")
        last_col = spec.from_.get("last_name")

        def coherent(value: Any, ctx: MaskContext) -> Any:
            row = ctx.row
            first = row.get(first_col) if first_col else None
            last = row.get(last_col) if last_col else None
            if first is None and last is None:
                return fakes.value("safe_email", locale, value, ctx.names.avoid)
            return fakes.email_from(locale, first, last, ctx.names.avoid)

        return coherent
    if not known_provider(provider, locale):
        raise ValueError(f"unknown Faker provider '{provider}' (for example first_name, city)")

    def mask(value: Any, ctx: MaskContext) -> Any:
        return fakes.value(provider, locale, value, ctx.names.avoid)

    return mask


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _date_shift(spec: DateShiftOp, keys: MaskingKeys) -> MaskFunction:
    key, span = keys.derive("mask:date-shift"), spec.max_days
    offsets: dict[tuple[str, str], timedelta] = {}

    def offset(ctx: MaskContext) -> timedelta:
        found = offsets.get((ctx.entity_type, ctx.entity_id))
        if found is None:
            digest = hmac.digest(key, f"{ctx.entity_type}\x00{ctx.entity_id}".encode(), "sha256")
            number = int.from_bytes(digest[:8], "big")
            days = 1 + number % span  # never 0: a zero shift would show the true date
            found = timedelta(days=-days if (number >> 32) & 1 else days)
            if len(offsets) > 4096:
                offsets.clear()
            offsets[(ctx.entity_type, ctx.entity_id)] = found
        return found

    def mask(value: Any, ctx: MaskContext) -> Any:
        text = str(value)
        try:
            if len(text) == 10:
                return (date.fromisoformat(text) + offset(ctx)).isoformat()
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None  # not a date: never pass it through unshifted
        shifted = (moment + offset(ctx)).isoformat(sep="T" if "T" in text else " ")
        return shifted

    return mask


def _generalize(spec: GeneralizeOp) -> MaskFunction:
    to = spec.to
    if to in ("year", "month", "decade"):
        width = 4 if to != "month" else 7

        def dates(value: Any, ctx: MaskContext) -> Any:
            text = str(value)
            if not _DATE.match(text):
                return None
            if to == "decade":
                return f"{text[:3]}0s"
            return text[:width]

        return dates
    if to == "range":
        size = spec.size or 10

        def ranges(value: Any, ctx: MaskContext) -> Any:
            try:
                number = float(value)
            except (TypeError, ValueError):
                return None
            if math.isnan(number) or math.isinf(number):
                return None
            low = math.floor(number / size) * size
            return f"{low}-{low + size}"

        return ranges
    keep = spec.keep or 0
    stars = ["*" * n for n in range(65)]

    def prefix(value: Any, ctx: MaskContext) -> Any:
        text = str(value)
        size = len(text)
        kept = keep if size > keep else max(size - 1, 0)  # never the whole value
        hidden = size - kept
        return text[:kept] + (stars[hidden] if hidden <= 64 else "*" * hidden)

    return prefix


def _free_text(spec: FreeTextOp, keys: MaskingKeys | None, column: str) -> MaskFunction:
    kinds = {
        kind: compile_operator(getattr(spec, kind), keys, column)
        for kind in ("email", "phone", "card", "iban", "name")
    }
    region = spec.region

    def mask(value: Any, ctx: MaskContext) -> Any:
        text = str(value)
        spans = find_pii(text, ctx.names, region)
        if not spans:
            return text
        out, at = [], 0
        for start, end, kind in spans:
            out.append(text[at:start])
            replace = kinds[kind]
            masked = replace(text[start:end], ctx) if replace is not None else text[start:end]
            out.append("" if masked is None else str(masked))
            at = end
        out.append(text[at:])
        return "".join(out)

    return mask


def compile_operator(
    spec: AnyOp, keys: MaskingKeys | None, column: str = ""
) -> MaskFunction | None:
    """Compile one operator for a column; None means "leave the value unchanged" (keep).

    Raises:
        ValueError: the operator needs the master key and there is none, or names a Faker
            provider or locale that does not exist.
    """
    if isinstance(spec, KeepOp):
        return None
    if isinstance(spec, NullOp):
        return lambda value, ctx: None
    if isinstance(spec, RedactOp):
        replacement = spec.replacement
        return lambda value, ctx: replacement
    if isinstance(spec, PartialOp):
        return _partial(spec)
    if isinstance(spec, GeneralizeOp):
        return _generalize(spec)
    if isinstance(spec, FreeTextOp):
        return _free_text(spec, keys, column)
    if keys is None:
        raise ValueError("needs the master key")
    if isinstance(spec, HashOp):
        return _hash(spec, keys.derive("mask:hash"))
    if isinstance(spec, TokenizeOp):
        tokenizer = keys.tokenizer(spec.domain or column)
        return lambda value, ctx: tokenizer.tokenize(value)
    if isinstance(spec, FpeOp):
        return _fpe(spec, keys, column)
    if isinstance(spec, FakeOp):
        return _fake(spec, keys, column)
    return _date_shift(spec, keys)
