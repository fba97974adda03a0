"""Ray-free building blocks of ``moatforge curate``: row-level filters, redaction and dedup primitives.

Everything here works on one pandas batch (or one string) at a time and holds no global state, so the
same functions run unchanged inside Ray Data ``map_batches`` workers, in unit tests and in notebooks.
Every row-level step returns ``(kept, rejected)``; the rejected frame carries ``step`` and ``reason`` so
that the pipeline can write an audit trail saying why each dropped row was dropped.
"""
