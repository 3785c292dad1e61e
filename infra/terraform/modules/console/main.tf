# console: the web console (/ui/), pages over the services' APIs and live bus events. It calls the
# services as the signed-in person, at the in-cluster URLs the root module passes as CAIRN_*_URL.
module "service" {
  source = "../cairn-service"

  name                       = "console"
  service                    = "console"
  namespace                  = var.namespace
  image                      = var.image
  replicas                   = var.replicas
  resources                  = var.resources
  env                        = merge(var.settings, var.extra_settings)
  s3_credentials_secret_name = var.s3_credentials_secret_name
  platform_secret_name       = var.platform_secret_name
  kafka_sasl_secret_name     = var.kafka_sasl_secret_name
}
