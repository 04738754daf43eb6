"""DripDrop for Kafka: the imperative shell (Faust app, Kafka, PostgreSQL, providers, CLI)."""
