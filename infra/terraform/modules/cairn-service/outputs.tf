output "deployment_name" {
  description = "Name of the Deployment (the scale target of an HPA or ScaledObject)."
  value       = kubernetes_deployment_v1.service.metadata[0].name
}

output "url" {
  description = "In-cluster base URL of the service's HTTP API."
  value       = "http://${kubernetes_service_v1.service.metadata[0].name}.${var.namespace}.svc:8080"
}
