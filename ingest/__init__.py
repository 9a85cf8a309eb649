"""Stage 01, ingest: task collections, SNI task files, seed tasks and tabular sets -> Example rows."""

# The config module imports every stage's section model; loading it first lets any ingest module be
# imported on its own without a circular-import error.
import instructforge.config  # noqa: F401
