"""Database URLs in messages never show a password, however it is written."""

from __future__ import annotations

import pytest

from fabric.errors import SourceError
from fabric.sources.urls import engine_url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bob:s3/cr3t@127.0.0.1:xx/crm",
        "postgresql://bob:s3@cr3t@127.0.0.1:1/crm",
        "postgresql://bob:pa:ss@host:port/db",
    ],
)
def test_urls_never_show_the_password(url: str) -> None:
    with pytest.raises(SourceError) as info:
        engine_url(url)
    message = str(info.value)
    assert "cr3t" not in message and "s3" not in message and "pa:ss" not in message
    assert "bob:***@" in message
