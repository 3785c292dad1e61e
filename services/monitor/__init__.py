"""monitor: baselines, data-quality and drift checks, model quality, and retraining on drift."""
