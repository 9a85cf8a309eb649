"""Stage 01, ingest: task collections, SNI task files, seed tasks and tabular sets -> Example rows."""
