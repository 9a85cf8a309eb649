"""`ingest:` section."""

from __future__ import annotations

from instructforge.config import Section


class IngestConfig(Section):
    pass
