"""featurestore: feature groups, online store (latest per id), point-in-time offline store."""
