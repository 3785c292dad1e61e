# Every Cairn service on Kubernetes, wired to Kafka, S3 (MinIO or AWS), Redis and an OTLP
# collector through CAIRN_* settings; the same code targets in-cluster or managed services.
# Locked by default: a shared Secret holds the platform key and the bootstrap admin token, and
# each service authenticates to Kafka as its own SASL principal `cairn-<service>` (a Secret per
# service), limited by the ACLs generated from the event catalogue (contracts/kafka-acls.txt).
locals {
  namespace = var.create_namespace ? kubernetes_namespace_v1.cairn[0].metadata[0].name : var.namespace
  services  = ["gateway", "ingest", "featurestore", "registry", "deployer", "monitor", "autoscaler", "trainer", "batch", "tuner", "edge", "experiments", "labeling", "pipelines", "console"]
  sasl      = var.kafka_security_protocol == "SASL_PLAINTEXT" || var.kafka_security_protocol == "SASL_SSL"
  settings = merge(
    {
      CAIRN_KAFKA_BOOTSTRAP_SERVERS = var.kafka_bootstrap_servers
      CAIRN_KAFKA_SECURITY_PROTOCOL = var.kafka_security_protocol
      CAIRN_STORE_URL               = "s3://${var.s3_bucket}"
      CAIRN_S3_REGION               = var.s3_region
      CAIRN_OTEL_EXPORTER           = var.otlp_endpoint == null ? "none" : "otlp"
      CAIRN_LOG_JSON                = "true"
    },
    local.sasl ? { CAIRN_KAFKA_SASL_MECHANISM = var.kafka_sasl_mechanism } : {},
    var.s3_endpoint == null ? {} : { CAIRN_S3_ENDPOINT = var.s3_endpoint },
    var.otlp_endpoint == null ? {} : { CAIRN_OTEL_ENDPOINT = var.otlp_endpoint },
    var.extra_settings,
  )
  common = {
    namespace                  = local.namespace
    image                      = var.image
    settings                   = local.settings
    s3_credentials_secret_name = var.s3_credentials_secret_name
    platform_secret_name       = kubernetes_secret_v1.platform.metadata[0].name
  }
  kafka_secret = { for name, secret in kubernetes_secret_v1.kafka_sasl : name => secret.metadata[0].name }
}

resource "kubernetes_namespace_v1" "cairn" {
  count = var.create_namespace ? 1 : 0
  metadata {
    name   = var.namespace
    labels = { "app.kubernetes.io/part-of" = "cairn" }
  }
}

# Read by every service as files: CAIRN_PLATFORM_KEY_FILE, CAIRN_BOOTSTRAP_ADMIN_TOKEN_FILE.
resource "kubernetes_secret_v1" "platform" {
  metadata {
    name      = "cairn-platform"
    namespace = local.namespace
    labels    = { "app.kubernetes.io/part-of" = "cairn" }
  }
  data = {
    platform-key = var.platform_key
    admin-token  = var.bootstrap_admin_token
  }
}

# One per service: the SCRAM credential of `cairn-<service>` (also KEDA's, for the trainer pools).
resource "kubernetes_secret_v1" "kafka_sasl" {
  for_each = local.sasl ? toset(local.services) : toset([])

  metadata {
    name      = "cairn-kafka-${each.key}"
    namespace = local.namespace
    labels    = { "app.kubernetes.io/part-of" = "cairn", "app.kubernetes.io/component" = each.key }
  }
  data = {
    username = "cairn-${each.key}"
    password = var.kafka_sasl_passwords[each.key]
  }
}

module "gateway" {
  source = "./modules/gateway"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "gateway", null)
  service_type               = var.gateway_service_type
}

module "ingest" {
  source = "./modules/ingest"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "ingest", null)
}

module "featurestore" {
  source = "./modules/featurestore"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "featurestore", null)
  redis_url                  = var.redis_url
}

module "registry" {
  source = "./modules/registry"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "registry", null)
}

module "deployer" {
  source = "./modules/deployer"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "deployer", null)
}

module "monitor" {
  source = "./modules/monitor"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "monitor", null)
}

module "autoscaler" {
  source = "./modules/autoscaler"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "autoscaler", null)
}

module "trainer" {
  source = "./modules/trainer"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "trainer", null)
  bootstrap_servers          = var.kafka_bootstrap_servers
  kafka_sasl_mechanism       = var.kafka_sasl_mechanism
  keda_enabled               = var.keda_enabled
  gpu_enabled                = var.gpu_enabled
  gpu_image                  = var.gpu_image
  dask_scheduler             = var.dask_enabled ? module.dask[0].scheduler_address : null
}

# The Dask cluster distributed training jobs (instance_count > 1) run on.
module "dask" {
  source = "./modules/dask"
  count  = var.dask_enabled ? 1 : 0

  namespace = local.common.namespace
  image     = local.common.image
  workers   = var.dask_workers
}

# Batch jobs with an endpoint_name call the gateway's Service in the same namespace.
module "batch" {
  source = "./modules/batch"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "batch", null)
  extra_settings             = { CAIRN_BATCH_GATEWAY_URL = "http://gateway.${local.common.namespace}.svc:8080" }
  bootstrap_servers          = var.kafka_bootstrap_servers
  kafka_sasl_mechanism       = var.kafka_sasl_mechanism
  keda_enabled               = var.keda_enabled
}

module "tuner" {
  source = "./modules/tuner"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "tuner", null)
}

# Devices get presigned GET URLs of the store when it is S3 reachable by them; set
# CAIRN_EDGE_PRESIGN_DOWNLOADS false when the bucket is private to the cluster (devices then
# download through the edge service).
module "edge" {
  source = "./modules/edge"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "edge", null)
  extra_settings             = { CAIRN_EDGE_PRESIGN_DOWNLOADS = "true" }
}

module "experiments" {
  source = "./modules/experiments"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "experiments", null)
}

# One replica: its trigger reader is one consumer group, and executions are serialised per process.
module "pipelines" {
  source = "./modules/pipelines"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "pipelines", null)
}

# The annotator's page is served by the service at /ui/ (expose it through your ingress).
module "labeling" {
  source = "./modules/labeling"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "labeling", null)
}

# The web console, served by the service at /ui/ (expose it through your ingress). It calls the
# other services as the signed-in person, at their in-cluster URLs.
module "console" {
  source = "./modules/console"

  namespace                  = local.common.namespace
  image                      = local.common.image
  settings                   = local.common.settings
  s3_credentials_secret_name = local.common.s3_credentials_secret_name
  platform_secret_name       = local.common.platform_secret_name
  kafka_sasl_secret_name     = lookup(local.kafka_secret, "console", null)
  extra_settings = {
    CAIRN_CONSOLE_SERVICE_URLS = jsonencode({
      gateway      = module.gateway.url
      ingest       = module.ingest.url
      featurestore = module.featurestore.url
      registry     = module.registry.url
      deployer     = module.deployer.url
      monitor      = module.monitor.url
      autoscaler   = module.autoscaler.url
      trainer      = module.trainer.url
      batch        = module.batch.url
      tuner        = module.tuner.url
      edge         = module.edge.url
      experiments  = module.experiments.url
      labeling     = module.labeling.url
      pipelines    = module.pipelines.url
    })
  }
}
