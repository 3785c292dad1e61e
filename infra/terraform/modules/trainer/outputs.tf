output "url" {
  description = "In-cluster base URL of the trainer's HTTP API."
  value       = module.api.url
}

output "pools" {
  description = "Worker pool Deployments KEDA scales."
  value       = { for name, pool in module.pool : name => pool.deployment_name }
}
