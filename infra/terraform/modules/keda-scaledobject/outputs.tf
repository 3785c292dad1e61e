output "name" {
  description = "Name of the ScaledObject."
  value       = var.name
}
