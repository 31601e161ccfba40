"""Governed marketing pipelines: the library behind the DAGs and the gmp CLI."""
