"""Base of every config section. Its own module, so each stage folder's `config.py` can import it
without importing `instructforge.config`, which imports every section (no import cycle)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# Marks a field that changes how fast or how patiently a stage works, never what it writes:
# `Field(..., json_schema_extra=SPEED_ONLY)`. Such fields stay out of stage fingerprints, so
# tuning them never reruns a finished stage.
SPEED_ONLY = {"speed_only": True}


class Section(BaseModel):
    """Unknown keys are errors; values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def output_settings(self) -> dict[str, Any]:
        """The settings that can change what a stage writes (JSON form): every field but the
        SPEED_ONLY ones, nested sections included. This is what stage fingerprints hash."""
        dumped = self.model_dump(mode="json")
        out = {}
        for name, field in type(self).model_fields.items():
            if field.exclude or (field.json_schema_extra or {}).get("speed_only"):
                continue
            value = getattr(self, name)
            if isinstance(value, Section):
                out[name] = value.output_settings()
            elif isinstance(value, list) and value and all(isinstance(v, Section) for v in value):
                out[name] = [v.output_settings() for v in value]
            else:
                out[name] = dumped[name]
        return out
