"""Audit replay (SPEC §10): pure invariant checks (``checks``) and the Kafka reader (``replay``)."""
