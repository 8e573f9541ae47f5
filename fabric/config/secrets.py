"""Keys: where they come from, and the key file `fabric demo` writes.

Secrets never live in fabric.yaml or in rule files. The master key (masking HMACs, the identity
index, and encryption at rest until a store key is rotated in) comes from an environment
variable or from the key file the config names; store keys (encryption at rest, rotated by
`fabric store rotate-key`) likewise;
API keys are in the config only as SHA-256 hashes. The key file must be private (mode 0600),
like an SSH key, and its contents are never printed or logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fabric.config.documents import YamlLoadError, load_yaml_file
from fabric.config.models import ProjectConfig
from fabric.crypto import MASTER_KEY_ID, KeyRing
from fabric.errors import ConfigError
from fabric.files import write_private

__all__ = [
    "Secrets",
    "add_store_key",
    "generate_key_file",
    "hash_api_key",
    "load_secrets",
    "retire_store_keys",
]

_KEY_FILE_FIELDS = {"master_key", "api_keys", "store_keys"}
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True, repr=False)
class Secrets:
    """Loaded secrets. ``repr`` is hidden so a stray log line cannot print them."""

    master_key: bytes | None
    api_keys: dict[str, str] = field(default_factory=dict)
    #: store keys in order, the current one first (without the master key)
    store_keys: tuple[tuple[str, bytes], ...] = ()
    #: where the store keys came from: "file", "env" or "" (none: the master key encrypts)
    store_keys_from: str = ""

    def __repr__(self) -> str:
        ids = [key_id for key_id, _ in self.store_keys]
        return (
            f"Secrets(master_key={'set' if self.master_key else 'unset'}, "
            f"store_key_ids={ids}, api_keys=...)"
        )

    @property
    def key_ring(self) -> KeyRing | None:
        """The keys of encryption at rest (None: no key at all, blobs are only compressed).

        The master key stays in the ring as key "0" so blobs sealed before the first
        rotation still open.
        """
        keys = dict(self.store_keys)
        if self.master_key:
            keys.setdefault(MASTER_KEY_ID, self.master_key)
        if not keys:
            return None
        current = self.store_keys[0][0] if self.store_keys else MASTER_KEY_ID
        return KeyRing(current, keys)


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest stored in fabric.yaml for an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _decode_key(text: str, where: str, what: str = "master key") -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{where}: {what} is not valid base64") from exc
    if len(key) < 32:
        raise ConfigError(
            f"{where}: {what} must be at least 32 bytes (base64 of 32 random "
            "bytes, e.g. `python -c 'import os,base64;print(base64.b64encode("
            "os.urandom(32)).decode())'`)"
        )
    return key


def _read_key_file(path: Path) -> Any:
    """The key file's YAML, read with the limits of every file fabric reads (size, nesting,
    no aliases). The message names the line, never what is written there: a key."""
    try:
        return load_yaml_file(path).data or {}
    except YamlLoadError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        reason = "not well-formed YAML" if exc.reason.startswith("not valid YAML") else exc.reason
        raise ConfigError(f"{where}: cannot read key file ({reason})") from exc


def load_secrets(config: ProjectConfig) -> Secrets:
    """Load the master key (environment first, then key file) and the key file's API keys."""
    env_name = config.secrets.master_key_env
    master: bytes | None = None
    api_keys: dict[str, str] = {}
    store_keys: list[tuple[str, bytes]] = []
    store_from = ""
    if config.secrets.file is not None:
        path = config.resolve(config.secrets.file)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError as exc:
            raise ConfigError(
                f"{path}: key file not found (named by secrets.file in fabric.yaml)"
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{path}: key file is readable by other users; run `chmod 600 {path}`"
            )
        data = _read_key_file(path)
        if not isinstance(data, dict) or not set(data) <= _KEY_FILE_FIELDS:
            raise ConfigError(
                f"{path}: key file must hold only {', '.join(sorted(_KEY_FILE_FIELDS))}"
            )
        store_keys = _file_store_keys(data.get("store_keys"), path)
        if store_keys:
            store_from = "file"
        if data.get("master_key"):
            master = _decode_key(str(data["master_key"]), str(path))
        raw_keys = data.get("api_keys") or {}
        if not isinstance(raw_keys, dict):
            raise ConfigError(f"{path}: api_keys must map key names to keys")
        api_keys = {str(k): str(v) for k, v in raw_keys.items()}
    if os.environ.get(env_name):
        master = _decode_key(os.environ[env_name], f"environment variable {env_name}")
    store_env = config.secrets.store_keys_env
    if os.environ.get(store_env):
        store_keys = _env_store_keys(os.environ[store_env], store_env)
        store_from = "env"
    return Secrets(
        master_key=master,
        api_keys=api_keys,
        store_keys=tuple(store_keys),
        store_keys_from=store_from,
    )


def _key_id(value: object, where: str) -> str:
    text = str(value)
    if not _KEY_ID.fullmatch(text) or text == MASTER_KEY_ID:
        raise ConfigError(
            f"{where}: store key id {text[:40]!r} must be 1-32 letters, digits, '_' or '-', "
            f"and not '{MASTER_KEY_ID}' (the master key's id)"
        )
    return text


def _checked(keys: list[tuple[str, bytes]], where: str) -> list[tuple[str, bytes]]:
    ids = [key_id for key_id, _ in keys]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: store key ids must be unique")
    return keys


def _file_store_keys(raw: object, path: Path) -> list[tuple[str, bytes]]:
    """``store_keys: [{id: ..., key: ...}, ...]``, the current key first."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: store_keys must be a list of {{id, key}}, current first")
    keys = []
    for at, item in enumerate(raw):
        where = f"{path}: store_keys[{at}]"
        if not isinstance(item, dict) or set(item) != {"id", "key"}:
            raise ConfigError(f"{where} must have exactly 'id' and 'key'")
        keys.append((_key_id(item["id"], where), _decode_key(str(item["key"]), where, "store key")))
    return _checked(keys, f"{path}: store_keys")


def _env_store_keys(text: str, name: str) -> list[tuple[str, bytes]]:
    """``ID:BASE64,ID:BASE64``, the current key first."""
    keys = []
    for at, part in enumerate(p for p in text.split(",") if p.strip()):
        where = f"environment variable {name} (entry {at + 1})"
        key_id, sep, key = part.strip().partition(":")
        if not sep:
            raise ConfigError(f"{where}: expected ID:BASE64")
        keys.append((_key_id(key_id, where), _decode_key(key, where, "store key")))
    return _checked(keys, f"environment variable {name}")


_HEADER = "# fabric key file: keep it private (mode 0600) and out of version control.\n"


def _key_file(config: ProjectConfig) -> tuple[Path, dict[str, Any]]:
    if config.secrets.file is None:
        raise ConfigError(
            "rotating the store key needs a key file (fabric.yaml secrets.file) to hold the "
            f"new key; or put the new key first in {config.secrets.store_keys_env} and run "
            "`fabric store rotate-key --resume`"
        )
    path = config.resolve(config.secrets.file)
    load_secrets(config)  # the file's checks: exists, private, well formed
    return path, _read_key_file(path)


def add_store_key(config: ProjectConfig) -> str:
    """Put a new random store key first in the key file; return its id.

    The older keys stay (blobs sealed under them must still open until they are re-sealed).
    """
    path, data = _key_file(config)
    raw = list(data.get("store_keys") or [])
    numbers = [int(str(k["id"])[1:]) for k in raw if re.fullmatch(r"k\d+", str(k["id"]))]
    key_id = f"k{max(numbers, default=0) + 1}"
    raw.insert(0, {"id": key_id, "key": base64.b64encode(os.urandom(32)).decode()})
    data["store_keys"] = raw
    write_private(path, _HEADER + yaml.safe_dump(data, sort_keys=False), sync=True)
    return key_id


def retire_store_keys(config: ProjectConfig, in_use: set[str]) -> list[str]:
    """Drop the key file's store keys no blob is sealed under (never the current one).

    Returns the ids dropped. The master key is never dropped: it has other uses.
    """
    path, data = _key_file(config)
    raw = list(data.get("store_keys") or [])
    kept = [k for at, k in enumerate(raw) if at == 0 or str(k["id"]) in in_use]
    dropped = [str(k["id"]) for k in raw if k not in kept]
    if dropped:
        data["store_keys"] = kept
        write_private(path, _HEADER + yaml.safe_dump(data, sort_keys=False), sync=True)
    return dropped


def generate_key_file(path: Path, key_names: list[str]) -> dict[str, str]:
    """Write a new private key file (mode 0600) with a master key and one API key per name.

    Returns the API keys by name, for the caller to turn into hashes and example requests.
    """
    api_keys = {name: f"fab_{secrets.token_urlsafe(24)}" for name in key_names}
    body = yaml.safe_dump(
        {
            "master_key": base64.b64encode(os.urandom(32)).decode(),
            "api_keys": api_keys,
        },
        sort_keys=False,
    )
    write_private(path, _HEADER + body, sync=True)
    return api_keys
