"""Where the CLI's messages go: readable lines on the terminal, or JSON lines for log collectors.

Both go to stderr (stdout is kept for `--json`). Code logs through `logging.getLogger("instructforge...")`
with `extra={...}` fields (stage, event, reason...), which JSON lines carry as keys.
"""

from __future__ import annotations

import logging
from typing import Literal

from pythonjsonlogger.json import JsonFormatter
from rich.console import Console

LogFormat = Literal["text", "json"]
STYLE = {logging.WARNING: "[yellow]warning:[/] ", logging.ERROR: "[red]error:[/] ", logging.CRITICAL: "[red]error:[/] "}


class ConsoleHandler(logging.Handler):
    """One plain line per record on the rich console; warnings and errors say so in colour."""

    def __init__(self, console: Console):
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        prefix = STYLE.get(record.levelno, "")
        self.console.print(prefix, end="", markup=True, highlight=False)
        self.console.print(record.getMessage(), markup=False, highlight=False, soft_wrap=True)


def setup_logging(fmt: LogFormat, console: Console) -> None:
    """Route the `instructforge` loggers to stderr in the chosen format (replacing earlier setup)."""
    logger = logging.getLogger("instructforge")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    if fmt == "json":
        handler: logging.Handler = logging.StreamHandler(console.file)
        handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(message)s", timestamp="time",
                                           rename_fields={"levelname": "level"}))  # time: ISO 8601, UTC
    else:
        handler = ConsoleHandler(console)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
