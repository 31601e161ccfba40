"""Where a DAG run's report lives: one rule for the DAG task that writes it and the plugin that serves it."""

from __future__ import annotations


def run_dir_name(run_id: str) -> str:
    """The folder name of a run's report: run ids are free text when a run is triggered by hand."""
    return run_id.replace("/", "_")
