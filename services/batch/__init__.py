"""batch: batch transform jobs, sharded over an autoscaled worker pool."""
