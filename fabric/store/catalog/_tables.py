"""What every group of the catalog's tables shares: its one connection, and bulk rewrites.

Each group (entities, dictionaries, runs, history, identity index) is a mixin of
:class:`fabric.store.catalog.Catalog` over the same connection, so a write of one group joins
a transaction another has open (a full sync's bulk rewrite of source keys, say).
"""

from __future__ import annotations

from fabric.store.catalog._bulk import BULK_TABLES, BulkRewrite
from fabric.store.database import Database

__all__ = ["Tables"]


class Tables:
    """The catalog's connection, as every group of its tables uses it.

    Many ids go in as one JSON array parameter (``IN {self._conn.ids}``): one statement
    whatever their number, each id an index probe.
    """

    _conn: Database

    def rewrite(self, table: str, entity_type: str) -> BulkRewrite:
        """Start replacing every row of one entity type in ``table`` (see :class:`BulkRewrite`).

        Use it as a context manager (committed on success, rolled back on error), or call
        ``finish``/``abort`` yourself when the rows arrive over a longer stretch of work.
        """
        if table not in BULK_TABLES:
            raise ValueError(f"not a table a full sync rewrites: {table}")
        return BulkRewrite(self._conn, table, entity_type)
