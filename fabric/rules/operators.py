"""Masking operators: each compiles its parameters once into a plain function of one value.

Operators never see YAML: the policy loader validates the parameters into the models below and
hands them here, and the returned callables run per value on the hot path.
"""

from __future__ import annotations

import hashlib
import hmac
from base64 import b32encode
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field

from fabric.config._validation import StrictModel

__all__ = ["MaskFunction", "OperatorSpec", "compile_operator"]

MaskFunction = Callable[[Any], Any]


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
    """Keyed hash (HMAC-SHA256 with the master key): equal inputs give equal outputs."""

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


OperatorSpec = Annotated[KeepOp | NullOp | RedactOp | HashOp | PartialOp, Field(discriminator="op")]


def _partial(spec: PartialOp) -> MaskFunction:
    first, last, char = spec.keep_first, spec.keep_last, spec.mask_char

    def mask(value: Any) -> Any:
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

    def mask(value: Any) -> Any:
        mac = inner.copy()  # copying the keyed state skips re-deriving the key pads per value
        mac.update(str(value).encode())
        digest = mac.digest()
        text = digest.hex() if spec.encoding == "hex" else b32encode(digest).decode().rstrip("=")
        return text[: spec.truncate] if spec.truncate else text

    return mask


def compile_operator(
    spec: KeepOp | NullOp | RedactOp | HashOp | PartialOp, key: bytes | None
) -> MaskFunction | None:
    """Compile one operator; None means "leave the value unchanged" (keep)."""
    if isinstance(spec, KeepOp):
        return None
    if isinstance(spec, NullOp):
        return lambda value: None
    if isinstance(spec, RedactOp):
        replacement = spec.replacement
        return lambda value: replacement
    if isinstance(spec, HashOp):
        if key is None:
            raise ValueError("needs the master key")
        return _hash(spec, key)
    return _partial(spec)
