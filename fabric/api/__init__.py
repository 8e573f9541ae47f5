"""HTTP API (Litestar): a thin adapter over the entity service."""

from fabric.api.app import create_app

__all__ = ["create_app"]
