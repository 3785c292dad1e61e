# A KEDA ScaledObject sizing one worker pool on Kafka consumer-group lag; the same shape as
# `services.autoscaler.keda.keda_scaled_object`, which the autoscaler renders. On a SASL-secured Kafka, KEDA
# authenticates as the pool's own principal through a TriggerAuthentication.
locals {
  keda_sasl = { "SCRAM-SHA-512" = "scram_sha512", "SCRAM-SHA-256" = "scram_sha256", "PLAIN" = "plaintext" }
  # Added to each trigger only with SASL (a for-expression keeps the object types consistent).
  auth_metadata = {
    for key, value in { sasl = lookup(local.keda_sasl, var.sasl_mechanism, "none"), tls = var.tls ? "enable" : "disable" } :
    key => value if var.sasl_secret_name != null
  }
  auth_ref = {
    for key, value in { authenticationRef = { name = "${var.name}-kafka" } } :
    key => value if var.sasl_secret_name != null
  }
}

resource "kubernetes_manifest" "trigger_authentication" {
  count = var.sasl_secret_name == null ? 0 : 1

  manifest = {
    apiVersion = "keda.sh/v1alpha1"
    kind       = "TriggerAuthentication"
    metadata = {
      name      = "${var.name}-kafka"
      namespace = var.namespace
      labels    = { "app.kubernetes.io/part-of" = "cairn", "cairn.pool" = var.name }
    }
    spec = {
      secretTargetRef = [
        { parameter = "username", name = var.sasl_secret_name, key = "username" },
        { parameter = "password", name = var.sasl_secret_name, key = "password" },
      ]
    }
  }
}

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
        for topic in var.topics : merge({
          type = "kafka"
          metadata = merge({
            bootstrapServers           = var.bootstrap_servers
            consumerGroup              = var.consumer_group
            topic                      = topic
            lagThreshold               = tostring(var.lag_threshold)
            activationLagThreshold     = tostring(var.activation_lag_threshold)
            offsetResetPolicy          = "earliest"
            allowIdleConsumers         = "false"
            scaleToZeroOnInvalidOffset = "false"
          }, local.auth_metadata)
        }, local.auth_ref)
      ]
    }
  }
}
