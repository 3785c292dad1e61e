# pipelines: pipeline definitions and executions, step caching, triggers on events and schedules.
module "service" {
  source = "../cairn-service"

  name                       = "pipelines"
  service                    = "pipelines"
  namespace                  = var.namespace
  image                      = var.image
  replicas                   = var.replicas
  resources                  = var.resources
  env                        = merge(var.settings, var.extra_settings)
  s3_credentials_secret_name = var.s3_credentials_secret_name
  platform_secret_name       = var.platform_secret_name
  kafka_sasl_secret_name     = var.kafka_sasl_secret_name
}
