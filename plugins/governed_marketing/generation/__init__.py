"""Content generation: cohort prompts to a provider, names merged locally, the outbox written."""
