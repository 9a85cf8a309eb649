"""Errors a user can act on. The CLI prints them as one line (no traceback unless --debug)."""

from __future__ import annotations


class InstructforgeError(Exception):
    """Base for every error that is the user's input or environment, not a bug."""


class ConfigError(InstructforgeError):
    pass


class InputError(InstructforgeError):
    """Bad input data, located as precisely as we can: file, line (or row), field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field, self.detail = file, line, field, message
        where = ":".join(str(p) for p in (file, line) if p is not None)
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}" if where else f"{what}{message}")

    def location(self) -> dict[str, str]:
        """The error as evidence for a rejected row (lenient mode)."""
        loc = {"file": self.file, "line": self.line, "field": self.field}
        return {k: str(v) for k, v in loc.items() if v is not None}
