"""Keys: where they come from, and the key file `fabric demo` writes.

Secrets never live in fabric.yaml or in rule files. The master key (masking HMACs, later
encryption at rest) comes from an environment variable or from the key file the config names;
API keys are in the config only as SHA-256 hashes. The key file must be private (mode 0600),
like an SSH key, and its contents are never printed or logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fabric.config.models import ProjectConfig
from fabric.errors import ConfigError

__all__ = ["Secrets", "generate_key_file", "hash_api_key", "load_secrets"]


@dataclass(frozen=True, repr=False)
class Secrets:
    """Loaded secrets. ``repr`` is hidden so a stray log line cannot print them."""

    master_key: bytes | None
    api_keys: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Secrets(master_key={'set' if self.master_key else 'unset'}, api_keys=...)"


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest stored in fabric.yaml for an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{where}: master key is not valid base64") from exc
    if len(key) < 32:
        raise ConfigError(
            f"{where}: master key must be at least 32 bytes (base64 of 32 random "
            "bytes, e.g. `python -c 'import os,base64;print(base64.b64encode("
            "os.urandom(32)).decode())'`)"
        )
    return key


def load_secrets(config: ProjectConfig) -> Secrets:
    """Load the master key (environment first, then key file) and the key file's API keys."""
    env_name = config.secrets.master_key_env
    master: bytes | None = None
    api_keys: dict[str, str] = {}
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
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read key file ({type(exc).__name__})") from exc
        if not isinstance(data, dict) or not set(data) <= {"master_key", "api_keys"}:
            raise ConfigError(f"{path}: key file must hold only 'master_key' and 'api_keys'")
        if data.get("master_key"):
            master = _decode_key(str(data["master_key"]), str(path))
        raw_keys = data.get("api_keys") or {}
        if not isinstance(raw_keys, dict):
            raise ConfigError(f"{path}: api_keys must map key names to keys")
        api_keys = {str(k): str(v) for k, v in raw_keys.items()}
    if os.environ.get(env_name):
        master = _decode_key(os.environ[env_name], f"environment variable {env_name}")
    return Secrets(master_key=master, api_keys=api_keys)


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
    header = "# fabric key file: keep it private (mode 0600) and out of version control.\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(header + body)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return api_keys
