"""The experiments service: every training, tuning, processing job and pipeline execution as a
run (parameters, metric curves, artifacts, lineage) in a named experiment, kept from the bus."""
