# featurestore: Feature groups; online store in Redis, offline history in the object store.
module "service" {
  source = "../cairn-service"

  name                       = "featurestore"
  service                    = "featurestore"
  namespace                  = var.namespace
  image                      = var.image
  replicas                   = var.replicas
  resources                  = var.resources
  env                        = merge(var.settings, { CAIRN_FEATURESTORE_ONLINE_URL = var.redis_url }, var.extra_settings)
  s3_credentials_secret_name = var.s3_credentials_secret_name
  platform_secret_name       = var.platform_secret_name
  kafka_sasl_secret_name     = var.kafka_sasl_secret_name
}
