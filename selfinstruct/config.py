"""`selfinstruct:` section."""

from __future__ import annotations

from instructforge.config import Section


class SelfInstructConfig(Section):
    pass
