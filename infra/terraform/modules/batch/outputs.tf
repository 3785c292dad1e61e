output "url" {
  description = "In-cluster base URL of the batch service's HTTP API."
  value       = module.api.url
}

output "pools" {
  description = "Worker pool Deployments KEDA scales."
  value       = { "batch-workers" = module.pool.deployment_name }
}
