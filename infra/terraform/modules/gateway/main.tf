# gateway: HTTP inference: SageMaker runtime API and Open Inference Protocol v2 on 8080.
module "service" {
  source = "../cairn-service"

  name                       = "gateway"
  service                    = "gateway"
  namespace                  = var.namespace
  image                      = var.image
  replicas                   = var.replicas
  resources                  = var.resources
  env                        = merge(var.settings, var.extra_settings)
  s3_credentials_secret_name = var.s3_credentials_secret_name
  platform_secret_name       = var.platform_secret_name
  kafka_sasl_secret_name     = var.kafka_sasl_secret_name
  service_type               = var.service_type
  hpa                        = var.hpa
}
