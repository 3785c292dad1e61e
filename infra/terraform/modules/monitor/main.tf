# monitor: Baselines, drift checks, model quality, retraining on drift.
module "service" {
  source = "../cairn-service"

  name                       = "monitor"
  service                    = "monitor"
  namespace                  = var.namespace
  image                      = var.image
  replicas                   = var.replicas
  resources                  = var.resources
  env                        = merge(var.settings, { CAIRN_MONITOR_REGISTRY_URL = var.registry_url, CAIRN_MONITOR_DEPLOYER_URL = var.deployer_url }, var.extra_settings)
  s3_credentials_secret_name = var.s3_credentials_secret_name
}
