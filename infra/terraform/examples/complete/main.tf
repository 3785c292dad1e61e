# Everything with one `terraform apply`: the namespace, the S3 credentials Secret and every Cairn
# service, pointed at the Kafka, MinIO/S3, Redis and OTLP collector you already run. The root
# module stores the platform key, the bootstrap admin token and each service's Kafka password in
# Secrets; create the SCRAM users and apply contracts/kafka-acls.txt on your Kafka first.
terraform {
  required_version = ">= 1.5"
  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.23"
    }
  }
}

provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kubeconfig_context
}

resource "kubernetes_namespace_v1" "cairn" {
  metadata {
    name = var.namespace
  }
}

resource "kubernetes_secret_v1" "s3" {
  metadata {
    name      = "cairn-s3"
    namespace = kubernetes_namespace_v1.cairn.metadata[0].name
  }
  data = {
    access-key = var.s3_access_key
    secret-key = var.s3_secret_key
  }
}

module "cairn" {
  source = "../.."

  namespace                  = kubernetes_namespace_v1.cairn.metadata[0].name
  create_namespace           = false
  image                      = var.image
  gpu_image                  = var.gpu_image
  kafka_bootstrap_servers    = var.kafka_bootstrap_servers
  kafka_sasl_passwords       = var.kafka_sasl_passwords
  platform_key               = var.platform_key
  bootstrap_admin_token      = var.bootstrap_admin_token
  s3_endpoint                = var.s3_endpoint
  s3_bucket                  = var.s3_bucket
  s3_credentials_secret_name = kubernetes_secret_v1.s3.metadata[0].name
  redis_url                  = var.redis_url
  otlp_endpoint              = var.otlp_endpoint
  keda_enabled               = var.keda_enabled
  gpu_enabled                = var.gpu_enabled
  gateway_service_type       = "LoadBalancer"
}
