"""DripDrop for Kafka: the pure domain core (no Kafka, Faust or database imports)."""
