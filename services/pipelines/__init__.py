"""pipelines: pipeline definitions, executions, step caching and triggers on any event."""
