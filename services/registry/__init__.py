"""registry: model package groups, versions, approval, aliases, lineage (Model Registry)."""
