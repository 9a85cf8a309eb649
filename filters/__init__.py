"""Filters: exact and MinHash near-dedup, novelty, quality heuristics, decontamination, LLM judge."""
