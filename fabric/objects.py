"""Objects on S3-compatible storage: where exports and spines may live besides local files.

A location is a local path or an ``s3://bucket/key`` URL (:func:`parse_location`). The
endpoint and the credentials come from the standard AWS environment variables only
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``): never from ``fabric.yaml`` or rules, never logged, never in a message.

S3 has no rename, and pyarrow's output stream completes its multipart upload when it is
closed, after an error too (apache/arrow#40502), so writing the destination key directly could
leave half a file there. An object is therefore published in two steps: the complete local
file is uploaded under a staging key (``.fabric-staging/<random>`` in the destination's
bucket; the name carries nothing of the data), then copied to its destination on the server
(CopyObject: readers see no object or the whole one) and the staging object deleted. A process
killed between the two leaves only the staging object; an S3 lifecycle rule on the
``.fabric-staging/`` prefix expires those (README, "Exports on S3"). CopyObject copies at most
5 GiB in one request, so that is the largest export S3 takes today.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit

from fabric.errors import ConfigError, ObjectStorageError

__all__ = [
    "STAGING_PREFIX",
    "Location",
    "S3Url",
    "check_reachable",
    "delete_object",
    "fetch",
    "is_s3",
    "list_objects",
    "object_size",
    "open_object",
    "parse_location",
    "publish",
    "remove",
    "size_of",
]

#: Where objects wait in their bucket between upload and copy to their destination.
STAGING_PREFIX = ".fabric-staging/"
#: Seconds to wait for the endpoint to accept a connection: a wrong address fails fast.
_CONNECT_SECONDS = 5.0
#: Seconds one request may take once connected.
_REQUEST_SECONDS = 120.0
# S3's rules for bucket names (lowercase letters, digits, dots and hyphens; 3 to 63).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class S3Url:
    """An object (or, for a directory setting, a prefix) on S3-compatible storage."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        """The last part of the key, as a file's name."""
        return PurePosixPath(self.key).name

    @property
    def suffix(self) -> str:
        """The name's suffix (``.parquet``), as a path's."""
        return PurePosixPath(self.key).suffix

    def with_name(self, name: str) -> S3Url:
        """The object beside this one named ``name``."""
        return S3Url(self.bucket, str(PurePosixPath(self.key).with_name(name)))

    def __truediv__(self, name: str) -> S3Url:
        """The object ``name`` under this prefix."""
        return S3Url(self.bucket, f"{self.key.rstrip('/')}/{name}" if self.key else name)

    @property
    def path(self) -> str:
        """The object as pyarrow's S3 filesystem names it."""
        return f"{self.bucket}/{self.key}"


#: Where a file goes or comes from.
Location = Path | S3Url


def is_s3(text: str) -> bool:
    """Whether ``text`` names an object on S3 rather than a local file."""
    return text.lower().startswith("s3://")


def parse_location(text: str | Path, *, prefix: bool = False) -> Location:
    """A local path, or the S3 object (``prefix``: the prefix) ``text`` names.

    Raises:
        ConfigError: an ``s3://`` URL without a valid bucket, or without a key (an object).
    """
    if isinstance(text, Path) or not is_s3(text):
        return Path(text)
    parts = urlsplit(text)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not _BUCKET.fullmatch(bucket):
        raise ConfigError(
            f"{text}: not a valid S3 bucket name (3 to 63 lowercase letters, digits, dots or "
            "hyphens, as s3://bucket/key)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{text}: an S3 location has no query or fragment (s3://bucket/key)")
    if not prefix and (not key or key.endswith("/")):
        raise ConfigError(f"{text}: name an object, as s3://{bucket}/path/file.parquet")
    segments = key.rstrip("/").split("/") if key.rstrip("/") else []
    if any(segment in ("", ".", "..") for segment in segments):
        raise ConfigError(f"{text}: an S3 key has no empty, '.' or '..' parts")
    return S3Url(bucket, key.rstrip("/") if prefix else key)


def _environment() -> tuple[str | None, ...]:
    names = (
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
    )
    return tuple(os.environ.get(name) or None for name in names)


def _filesystem() -> Any:
    """The S3 filesystem the environment describes (one per set of variables)."""
    return _filesystem_for(_environment())


@functools.lru_cache(maxsize=4)
def _filesystem_for(env: tuple[str | None, ...]) -> Any:
    from pyarrow import fs

    endpoint, key, secret, token, region = env
    options: dict[str, Any] = {
        "connect_timeout": _CONNECT_SECONDS,
        "request_timeout": _REQUEST_SECONDS,
        "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=3),
    }
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            # The variable's value is an address, not a secret: safe to name.
            raise ConfigError(
                f"AWS_ENDPOINT_URL must be http://host:port or https://host:port, not {endpoint!r}"
            )
        options["endpoint_override"] = parts.netloc
        options["scheme"] = parts.scheme
    if (key is None) != (secret is None):
        raise ConfigError(
            "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither (then the AWS "
            "SDK's own chain is asked)"
        )
    if key is not None:
        options.update(access_key=key, secret_key=secret, session_token=token)
    if region is not None:
        options["region"] = region
    return fs.S3FileSystem(**options)


@contextlib.contextmanager
def _failures(what: str, url: S3Url) -> Iterator[None]:
    """pyarrow's errors as one line naming the object (they never carry credentials)."""
    try:
        yield
    except OSError as exc:
        reason = " ".join(str(exc).split())
        # pyarrow prefixes the SDK's words with the request's bucket and key (a staging key,
        # often): the object named first says which one mattered.
        if "AWS Error" in reason:
            reason = reason[reason.index("AWS Error") :]
        raise ObjectStorageError(f"{url}: cannot {what}: {reason[:300]}") from None


def publish(local: Path, url: S3Url) -> None:
    """Put the complete file ``local`` at ``url``: visible there whole or not at all.

    Raises:
        ObjectStorageError: the storage refused or did not answer (nothing at ``url``).
    """
    s3 = _filesystem()
    staging = S3Url(url.bucket, f"{STAGING_PREFIX}{secrets.token_hex(16)}")
    try:
        with _failures("upload", url), local.open("rb") as source:
            with s3.open_output_stream(staging.path) as sink:
                shutil.copyfileobj(source, sink, 8 << 20)
            s3.copy_file(staging.path, url.path)
    finally:
        with contextlib.suppress(OSError):
            s3.delete_file(staging.path)


@contextlib.contextmanager
def open_object(url: S3Url) -> Iterator[IO[bytes]]:
    """Read ``url`` as a binary file.

    Raises:
        ObjectStorageError: no such object, or the storage refused or did not answer.
    """
    s3 = _filesystem()
    with _failures("read", url):
        handle = s3.open_input_stream(url.path)
    try:
        yield handle
    finally:
        handle.close()


def fetch(url: S3Url, directory: Path) -> Path:
    """Copy ``url`` to a new file in ``directory``, readable by its owner only.

    The file keeps the object's name (its suffix tells CSV from Parquet), under a random
    directory so two fetches never meet.

    Raises:
        ObjectStorageError: no such object, or the storage refused or did not answer.
    """
    target = Path(tempfile.mkdtemp(prefix="fetch-", dir=directory)) / (url.name or "object")
    with open_object(url) as source, _failures("read", url):
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as sink:
            shutil.copyfileobj(source, sink, 8 << 20)
    return target


def object_size(url: S3Url) -> int | None:
    """The size of ``url`` in bytes, or None when there is no such object.

    Raises:
        ObjectStorageError: the storage refused or did not answer.
    """
    from pyarrow import fs

    with _failures("look up", url):
        info = _filesystem().get_file_info(url.path)
    return info.size if info.type == fs.FileType.File else None


def check_reachable(url: S3Url) -> None:
    """Ask the storage about ``url`` once, so a wrong endpoint, credentials or bucket fail
    before any work is done for it.

    Raises:
        ObjectStorageError: the storage refused or did not answer.
    """
    object_size(url)


def delete_object(url: S3Url) -> None:
    """Delete ``url`` (no error when it is gone already).

    Raises:
        ObjectStorageError: the storage refused or did not answer.
    """
    from pyarrow import fs

    s3 = _filesystem()
    with _failures("delete", url):
        if s3.get_file_info(url.path).type == fs.FileType.File:
            s3.delete_file(url.path)


def list_objects(prefix: S3Url) -> list[tuple[S3Url, int, float]]:
    """The objects directly under ``prefix``: each one's URL, size and modification time
    (seconds since 1970). A prefix with no objects gives none.

    Raises:
        ObjectStorageError: the storage refused or did not answer.
    """
    from pyarrow import fs

    with _failures("list", prefix):
        infos = _filesystem().get_file_info(fs.FileSelector(prefix.path, allow_not_found=True))
    found = []
    for info in infos:
        if info.type == fs.FileType.File:
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            found.append((S3Url(prefix.bucket, info.path.split("/", 1)[1]), info.size, mtime))
    return found


def size_of(where: Location) -> int | None:
    """The size of a local file or an object, or None when there is none.

    Raises:
        ObjectStorageError: the storage refused or did not answer.
    """
    if isinstance(where, S3Url):
        return object_size(where)
    try:
        return where.stat().st_size if where.is_file() else None
    except OSError:
        return None


def remove(where: Location) -> None:
    """Delete a local file or an object (no error when it is gone already).

    Raises:
        ObjectStorageError: the storage refused or did not answer.
    """
    if isinstance(where, S3Url):
        delete_object(where)
    else:
        where.unlink(missing_ok=True)
