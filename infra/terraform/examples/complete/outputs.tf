output "service_urls" {
  description = "In-cluster URL of each service."
  value       = module.cairn.service_urls
}
