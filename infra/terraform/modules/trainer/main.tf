# trainer: the control-plane API (one replica, also a worker), plus worker pools KEDA sizes on
# consumer lag: CPU workers on TrainingJobRequested and, optionally, GPU workers on the GPU topic
# (GpuTrainingJobRequested, its own group), so GPU work never waits behind CPU work or vice versa.
locals {
  env = merge(
    var.settings,
    var.dask_scheduler == null ? {} : { CAIRN_DASK_SCHEDULER = var.dask_scheduler },
    var.extra_settings,
  )
  # Both pools share one shape; the GPU pool is filtered out unless enabled.
  all_pools = {
    "trainer-cpu" = {
      numbers        = var.cpu_pool
      image          = var.image
      gpus           = 0
      resources      = var.worker_resources
      node_selector  = var.cpu_node_selector
      tolerations    = var.cpu_tolerations
      device         = "cpu"
      consumer_group = var.consumer_group
      topics         = var.topics
    }
    "trainer-gpu" = {
      numbers        = var.gpu_pool
      image          = coalesce(var.gpu_image, var.image)
      gpus           = 1
      resources      = var.gpu_worker_resources
      node_selector  = var.gpu_node_selector
      tolerations    = var.gpu_tolerations
      device         = "gpu"
      consumer_group = var.gpu_consumer_group
      topics         = var.gpu_topics
    }
  }
  pools = { for name, pool in local.all_pools : name => pool if name != "trainer-gpu" || var.gpu_enabled }
}

module "api" {
  source = "../cairn-service"

  name                       = "trainer"
  service                    = "trainer"
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
  source   = "../cairn-service"
  for_each = local.pools

  name                       = each.key
  service                    = "trainer"
  namespace                  = var.namespace
  image                      = each.value.image
  replicas                   = each.value.numbers.min_replicas
  resources                  = each.value.resources
  gpus                       = each.value.gpus
  node_selector              = each.value.node_selector
  tolerations                = each.value.tolerations
  env                        = merge(local.env, { CAIRN_TRAINER_DEVICE = each.value.device })
  s3_credentials_secret_name = var.s3_credentials_secret_name
  platform_secret_name       = var.platform_secret_name
  kafka_sasl_secret_name     = var.kafka_sasl_secret_name
  labels                     = { "cairn.pool" = each.key }
}

module "scaler" {
  source   = "../keda-scaledobject"
  for_each = var.keda_enabled ? local.pools : {}

  name                     = each.key
  namespace                = var.namespace
  deployment_name          = module.pool[each.key].deployment_name
  bootstrap_servers        = var.bootstrap_servers
  consumer_group           = each.value.consumer_group
  topics                   = each.value.topics
  lag_threshold            = each.value.numbers.lag_threshold
  activation_lag_threshold = each.value.numbers.activation_lag_threshold
  min_replicas             = each.value.numbers.min_replicas
  max_replicas             = each.value.numbers.max_replicas
  cooldown_period_s        = each.value.numbers.cooldown_period_s
  polling_interval_s       = each.value.numbers.polling_interval_s
  sasl_secret_name         = var.kafka_sasl_secret_name
  sasl_mechanism           = var.kafka_sasl_mechanism
  tls                      = contains(["SSL", "SASL_SSL"], lookup(local.env, "CAIRN_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"))
}
