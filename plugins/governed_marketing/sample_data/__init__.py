"""Sample data for demos, tests and benchmarks (`gmp crm generate`, `gmp demo`); the pipeline never reads it."""
