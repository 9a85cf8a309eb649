"""Base of every config section. Its own module, so each stage folder's `config.py` can import it
without importing `instructforge.config`, which imports every section (no import cycle)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors; values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
