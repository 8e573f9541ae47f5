"""Turn micro-database images into stored blobs and back.

Images are mostly empty pages and repeated column values, so zstd shrinks them several times
over. The compressor objects are not thread-safe and costly to create, so each thread keeps its
own. Encryption at rest slots in here (issue 4) without touching callers.
"""

from __future__ import annotations

import threading

import zstandard

from fabric.errors import StoreError

__all__ = ["decode_image", "encode_image"]

_local = threading.local()

#: Level 3 is zstd's default: near-best ratio for these images at a small fraction of the cost.
LEVEL = 3


def _codecs() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    codecs = getattr(_local, "codecs", None)
    if codecs is None:
        codecs = (zstandard.ZstdCompressor(level=LEVEL), zstandard.ZstdDecompressor())
        _local.codecs = codecs
    return codecs


def encode_image(image: bytes) -> bytes:
    """Compress an image for storage."""
    return _codecs()[0].compress(image)


def decode_image(blob: bytes, *, what: str) -> bytes:
    """Decompress a stored blob; ``what`` names the entity in the error message."""
    try:
        return _codecs()[1].decompress(blob)
    except zstandard.ZstdError as exc:
        raise StoreError(
            f"stored image of {what} is corrupt ({exc}); rebuild it with `fabric sync --full`"
        ) from exc
