"""autoscaler: sizes worker pools on consumer-group lag (local processes, Docker; KEDA on k8s)."""
