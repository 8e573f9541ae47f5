"""The sync of one entity type: full, or incremental from the watermarks.

Full: read every row, resolve every identity record, rebuild what changed, delete what is gone.
Incremental: read only rows at or past each table's watermark, and find the entities they
touch. Entities that only gained or changed child rows are patched in place; entities holding
a changed identity record (or one sharing a match key with it) are resolved again from their
stored identity rows, patched when they keep exactly their records, rebuilt from their stored
rows when they merge, split or lose a row. Every read happens before the first write, so a
source that fails mid-run leaves the store as it was; watermarks move in the last step, so the
next run reads the same rows again.
"""

from __future__ import annotations

from fabric.resolve.index import IdentityIndex
from fabric.sync.context import RunContext, ref_text
from fabric.sync.full import FullMode
from fabric.sync.incremental import IncrementalMode

__all__ = ["EntityTypeSync", "ref_text"]


class EntityTypeSync(FullMode, IncrementalMode):
    """Sync one entity type. Construction checks sources and rules; nothing is written."""

    def run(self, run: RunContext) -> str:
        """Sync this entity type, as part of ``run``; incremental when there is state to
        continue from.

        Returns the mode it ran in: "incremental", or "full" (asked for, or a first sync).
        """
        self.sync_run = run
        index = IdentityIndex(self.project.catalog, self.entity_type, self._master, self.rules)
        has_state = (
            not self.full
            and self.project.catalog.count(self.entity_type) > 0
            and index.has_records()
            and self.project.catalog.schemas().get(self.entity_type) == self.layout()
            # other match rules or transforms: what is stored no longer follows from them
            and self.project.catalog.schema_version(self.entity_type) == self.schema.version
        )
        # New images compress with the newest dictionary of this schema (a full sync may
        # train a better one).
        latest = self.project.catalog.latest_dictionary(self.entity_type, self.schema.version)
        if latest is not None:
            self.project.codec.dictionaries.use(self.entity_type, latest.dict_id)
        if has_state:
            self._run_incremental(index)
            return "incremental"
        self._run_full(index)
        return "full"
