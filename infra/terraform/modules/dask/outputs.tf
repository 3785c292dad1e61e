output "scheduler_address" {
  description = "What the trainer's CAIRN_DASK_SCHEDULER is set to."
  value       = "tcp://${kubernetes_service_v1.scheduler.metadata[0].name}.${var.namespace}.svc:8786"
}
