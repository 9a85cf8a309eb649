"""`selfinstruct:` section."""

from __future__ import annotations

from instructforge.section import Section


class SelfInstructConfig(Section):
    pass
