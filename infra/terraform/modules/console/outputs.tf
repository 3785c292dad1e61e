output "url" {
  description = "In-cluster base URL of the service's HTTP API."
  value       = module.service.url
}

output "deployment_name" {
  description = "Name of the Deployment."
  value       = module.service.deployment_name
}
