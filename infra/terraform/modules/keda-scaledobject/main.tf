# A KEDA ScaledObject sizing one worker pool on Kafka consumer-group lag; the same shape as
# `cairn.pools.keda_scaled_object`, which the autoscaler renders.
resource "kubernetes_manifest" "scaled_object" {
  manifest = {
    apiVersion = "keda.sh/v1alpha1"
    kind       = "ScaledObject"
    metadata = {
      name      = var.name
      namespace = var.namespace
      labels = {
        "app.kubernetes.io/part-of" = "cairn"
        "cairn.pool"                = var.name
      }
    }
    spec = {
      scaleTargetRef  = { name = var.deployment_name }
      pollingInterval = var.polling_interval_s
      cooldownPeriod  = var.cooldown_period_s
      minReplicaCount = var.min_replicas
      maxReplicaCount = var.max_replicas
      advanced = {
        horizontalPodAutoscalerConfig = {
          behavior = {
            scaleDown = { stabilizationWindowSeconds = var.cooldown_period_s }
            scaleUp   = { stabilizationWindowSeconds = 0 }
          }
        }
      }
      triggers = [
        for topic in var.topics : {
          type = "kafka"
          metadata = {
            bootstrapServers           = var.bootstrap_servers
            consumerGroup              = var.consumer_group
            topic                      = topic
            lagThreshold               = tostring(var.lag_threshold)
            activationLagThreshold     = tostring(var.activation_lag_threshold)
            offsetResetPolicy          = "earliest"
            allowIdleConsumers         = "false"
            scaleToZeroOnInvalidOffset = "false"
          }
        }
      ]
    }
  }
}
