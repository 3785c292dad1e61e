# autoscaler: Measures worker-pool lag and reports it; on Kubernetes KEDA does the scaling.
module "service" {
  source = "../cairn-service"

  name                       = "autoscaler"
  service                    = "autoscaler"
  namespace                  = var.namespace
  image                      = var.image
  replicas                   = var.replicas
  resources                  = var.resources
  env                        = merge(var.settings, { CAIRN_AUTOSCALER_BACKEND = "none" }, var.extra_settings)
  s3_credentials_secret_name = var.s3_credentials_secret_name
  platform_secret_name       = var.platform_secret_name
  kafka_sasl_secret_name     = var.kafka_sasl_secret_name
}
