"""Filters: exact and MinHash near-dedup, novelty, quality heuristics, decontamination, LLM judge.

`instructforge.config` is imported first: it imports this package's config module once `Section`
exists, so importing a filter module on its own must not start that cycle from the other end.
"""

import instructforge.config  # noqa: F401
