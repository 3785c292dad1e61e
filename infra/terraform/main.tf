# Every Cairn service on Kubernetes, wired to Kafka, S3 (MinIO or AWS), Redis and an OTLP
# collector through CAIRN_* settings; the same code targets in-cluster or managed services.
locals {
  namespace = var.create_namespace ? kubernetes_namespace_v1.cairn[0].metadata[0].name : var.namespace
  settings = merge(
    {
      CAIRN_KAFKA_BOOTSTRAP_SERVERS = var.kafka_bootstrap_servers
      CAIRN_STORE_URL               = "s3://${var.s3_bucket}"
      CAIRN_S3_REGION               = var.s3_region
      CAIRN_OTEL_EXPORTER           = var.otlp_endpoint == null ? "none" : "otlp"
      CAIRN_LOG_JSON                = "true"
    },
    var.s3_endpoint == null ? {} : { CAIRN_S3_ENDPOINT = var.s3_endpoint },
    var.otlp_endpoint == null ? {} : { CAIRN_OTEL_ENDPOINT = var.otlp_endpoint },
    var.extra_settings,
  )
  common = {
    namespace                  = local.namespace
    image                      = var.image
    settings                   = local.settings
    s3_credentials_secret_name = var.s3_credentials_secret_name
  }
}

resource "kubernetes_namespace_v1" "cairn" {
  count = var.create_namespace ? 1 : 0
  metadata {
    name   = var.namespace
    labels = { "app.kubernetes.io/part-of" = "cairn" }
  }
}

module "gateway" {
  source = "./modules/gateway"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  service_type               = var.gateway_service_type
}

module "ingest" {
  source = "./modules/ingest"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
}

module "featurestore" {
  source = "./modules/featurestore"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  redis_url                  = var.redis_url
}

module "registry" {
  source = "./modules/registry"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
}

module "deployer" {
  source = "./modules/deployer"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
}

module "monitor" {
  source = "./modules/monitor"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
}

module "autoscaler" {
  source = "./modules/autoscaler"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
}

module "trainer" {
  source = "./modules/trainer"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  bootstrap_servers          = var.kafka_bootstrap_servers
  keda_enabled               = var.keda_enabled
  gpu_enabled                = var.gpu_enabled
  gpu_image                  = var.gpu_image
}
