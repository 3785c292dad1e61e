output "namespace" {
  description = "Namespace of the deployment."
  value       = local.namespace
}

output "service_urls" {
  description = "In-cluster base URL of each service's HTTP API (CAIRN_<SERVICE>_URL for the CLI)."
  value = {
    gateway      = module.gateway.url
    ingest       = module.ingest.url
    featurestore = module.featurestore.url
    registry     = module.registry.url
    deployer     = module.deployer.url
    monitor      = module.monitor.url
    autoscaler   = module.autoscaler.url
    trainer      = module.trainer.url
    batch        = module.batch.url
    tuner        = module.tuner.url
    edge         = module.edge.url
    experiments  = module.experiments.url
    labeling     = module.labeling.url
    pipelines    = module.pipelines.url
    console      = module.console.url
  }
}

output "trainer_pools" {
  description = "Worker pool Deployments KEDA scales."
  value       = module.trainer.pools
}

output "batch_pools" {
  description = "Batch worker pool Deployments KEDA scales."
  value       = module.batch.pools
}
