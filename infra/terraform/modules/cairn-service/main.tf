# One Cairn service on Kubernetes: ConfigMap (CAIRN_* settings), Deployment, Service, optional HPA.
# Secrets are mounted as files (never env values, which child processes and crash dumps inherit):
# the platform key and bootstrap admin token, and the Kafka principal's SCRAM password.
locals {
  port                = 8080
  platform_secret_dir = "/run/secrets/cairn"
  kafka_secret_dir    = "/run/secrets/cairn-kafka"
  labels = merge(
    {
      "app.kubernetes.io/name"      = var.name
      "app.kubernetes.io/component" = var.service
      "app.kubernetes.io/part-of"   = "cairn"
    },
    var.labels,
  )
  selector = { "app.kubernetes.io/name" = var.name, "app.kubernetes.io/part-of" = "cairn" }
  secret_env = var.s3_credentials_secret_name == null ? {} : {
    CAIRN_S3_ACCESS_KEY = var.s3_access_key_secret_key
    CAIRN_S3_SECRET_KEY = var.s3_secret_key_secret_key
  }
  limits = merge(var.resources.limits, var.gpus > 0 ? { "nvidia.com/gpu" = tostring(var.gpus) } : {})
  platform_env = var.platform_secret_name == null ? {} : {
    CAIRN_PLATFORM_KEY_FILE          = "${local.platform_secret_dir}/platform-key"
    CAIRN_BOOTSTRAP_ADMIN_TOKEN_FILE = "${local.platform_secret_dir}/admin-token"
  }
  # One principal per service (the trainer's pools share `cairn-trainer`): the Kafka ACLs of
  # contracts/kafka-acls.txt limit it to the service's own topics and groups.
  kafka_sasl_env = var.kafka_sasl_secret_name == null ? {} : {
    CAIRN_KAFKA_SASL_USERNAME      = "cairn-${var.service}"
    CAIRN_KAFKA_SASL_PASSWORD_FILE = "${local.kafka_secret_dir}/password"
  }
  env = merge(var.env, local.platform_env, local.kafka_sasl_env)
  secret_volumes = merge(
    var.platform_secret_name == null ? {} : {
      "cairn-platform" = { secret = var.platform_secret_name, path = local.platform_secret_dir }
    },
    var.kafka_sasl_secret_name == null ? {} : {
      "cairn-kafka" = { secret = var.kafka_sasl_secret_name, path = local.kafka_secret_dir }
    },
  )
}

resource "kubernetes_config_map_v1" "settings" {
  metadata {
    name      = "${var.name}-settings"
    namespace = var.namespace
    labels    = local.labels
  }
  data = local.env
}

resource "kubernetes_deployment_v1" "service" {
  metadata {
    name      = var.name
    namespace = var.namespace
    labels    = local.labels
  }

  # Rollouts are not awaited: a worker pool scaled to zero by KEDA is a healthy state.
  wait_for_rollout = false

  spec {
    replicas = var.replicas

    selector {
      match_labels = local.selector
    }

    template {
      metadata {
        labels = local.labels
        annotations = {
          # A settings change rolls the pods.
          "cairn.dev/settings-sha" = sha256(jsonencode(local.env))
        }
      }

      spec {
        termination_grace_period_seconds = var.termination_grace_period_s
        node_selector                    = var.node_selector

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          fs_group        = 10001
        }

        dynamic "volume" {
          for_each = local.secret_volumes
          content {
            name = volume.key
            secret {
              secret_name  = volume.value.secret
              default_mode = "0440"
            }
          }
        }

        dynamic "toleration" {
          for_each = var.tolerations
          content {
            key      = toleration.value.key
            operator = toleration.value.operator
            value    = toleration.value.value
            effect   = toleration.value.effect
          }
        }

        container {
          name              = var.service
          image             = var.image
          image_pull_policy = var.image_pull_policy
          args              = [var.service]

          port {
            name           = "http"
            container_port = local.port
          }

          env_from {
            config_map_ref {
              name = kubernetes_config_map_v1.settings.metadata[0].name
            }
          }

          dynamic "env" {
            for_each = local.secret_env
            content {
              name = env.key
              value_from {
                secret_key_ref {
                  name = var.s3_credentials_secret_name
                  key  = env.value
                }
              }
            }
          }

          dynamic "volume_mount" {
            for_each = local.secret_volumes
            content {
              name       = volume_mount.key
              mount_path = volume_mount.value.path
              read_only  = true
            }
          }

          resources {
            requests = var.resources.requests
            limits   = local.limits
          }

          liveness_probe {
            http_get {
              path = "/healthz"
              port = "http"
            }
            initial_delay_seconds = 10
            period_seconds        = 10
            timeout_seconds       = 5
            failure_threshold     = 3
          }

          readiness_probe {
            http_get {
              path = "/readyz"
              port = "http"
            }
            initial_delay_seconds = 5
            period_seconds        = 5
            timeout_seconds       = 5
            failure_threshold     = 3
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = false
            capabilities {
              drop = ["ALL"]
            }
          }
        }
      }
    }
  }

  lifecycle {
    # The HPA or the KEDA ScaledObject owns the replica count once deployed.
    ignore_changes = [spec[0].replicas]
  }
}

resource "kubernetes_service_v1" "service" {
  metadata {
    name      = var.name
    namespace = var.namespace
    labels    = local.labels
  }
  spec {
    type     = var.service_type
    selector = local.selector
    port {
      name        = "http"
      port        = local.port
      target_port = "http"
    }
  }
}

resource "kubernetes_horizontal_pod_autoscaler_v2" "service" {
  count = var.hpa == null ? 0 : 1

  metadata {
    name      = var.name
    namespace = var.namespace
    labels    = local.labels
  }
  spec {
    min_replicas = var.hpa.min_replicas
    max_replicas = var.hpa.max_replicas
    scale_target_ref {
      api_version = "apps/v1"
      kind        = "Deployment"
      name        = kubernetes_deployment_v1.service.metadata[0].name
    }
    metric {
      type = "Resource"
      resource {
        name = "cpu"
        target {
          type                = "Utilization"
          average_utilization = var.hpa.cpu_utilization_target
        }
      }
    }
  }
}
