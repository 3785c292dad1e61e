# batch: the transform-jobs API, planner and assembler (one replica, also a worker), plus the
# batch worker pool KEDA sizes on the consumer lag of TransformShardRequested (scale to zero).
locals {
  env        = merge(var.settings, var.extra_settings)
  worker_env = merge(local.env, { CAIRN_BATCH_ROLE = "worker" })
}

module "api" {
  source = "../cairn-service"

  name                       = "batch"
  service                    = "batch"
  namespace                  = var.namespace
  image                      = var.image
  replicas                   = var.replicas
  resources                  = var.resources
  env                        = local.env
  s3_credentials_secret_name = var.s3_credentials_secret_name
  platform_secret_name       = var.platform_secret_name
  kafka_sasl_secret_name     = var.kafka_sasl_secret_name
}

module "pool" {
  source = "../cairn-service"

  name                       = "batch-workers"
  service                    = "batch"
  namespace                  = var.namespace
  image                      = var.image
  replicas                   = var.pool.min_replicas
  resources                  = var.worker_resources
  env                        = local.worker_env
  s3_credentials_secret_name = var.s3_credentials_secret_name
  platform_secret_name       = var.platform_secret_name
  kafka_sasl_secret_name     = var.kafka_sasl_secret_name
  labels                     = { "cairn.pool" = "batch-workers" }
}

module "scaler" {
  source = "../keda-scaledobject"
  count  = var.keda_enabled ? 1 : 0

  name                     = "batch-workers"
  namespace                = var.namespace
  deployment_name          = module.pool.deployment_name
  bootstrap_servers        = var.bootstrap_servers
  consumer_group           = var.consumer_group
  topics                   = var.topics
  lag_threshold            = var.pool.lag_threshold
  activation_lag_threshold = var.pool.activation_lag_threshold
  min_replicas             = var.pool.min_replicas
  max_replicas             = var.pool.max_replicas
  cooldown_period_s        = var.pool.cooldown_period_s
  polling_interval_s       = var.pool.polling_interval_s
  sasl_secret_name         = var.kafka_sasl_secret_name
  sasl_mechanism           = var.kafka_sasl_mechanism
  tls                      = contains(["SSL", "SASL_SSL"], lookup(local.env, "CAIRN_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"))
}
