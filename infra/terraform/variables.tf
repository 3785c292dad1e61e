variable "namespace" {
  description = "Namespace every Cairn object lives in."
  type        = string
  default     = "cairn"
}

variable "create_namespace" {
  description = "Create the namespace (false: it exists already)."
  type        = bool
  default     = true
}

variable "image" {
  description = "Cairn image built from infra/docker/Dockerfile, e.g. registry.example.com/cairn:0.1.0."
  type        = string
}

variable "gpu_image" {
  description = "GPU trainer image built from infra/docker/Dockerfile.gpu (with gpu_enabled)."
  type        = string
  default     = null
}

variable "kafka_bootstrap_servers" {
  description = "Kafka (in-cluster Strimzi/Bitnami, or MSK) bootstrap servers, host:port[,...]."
  type        = string
}

variable "kafka_security_protocol" {
  description = "CAIRN_KAFKA_SECURITY_PROTOCOL: SASL_PLAINTEXT or SASL_SSL (a principal per service), or PLAINTEXT."
  type        = string
  default     = "SASL_PLAINTEXT"
  validation {
    condition     = contains(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], var.kafka_security_protocol)
    error_message = "One of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL."
  }
}

variable "kafka_sasl_mechanism" {
  description = "CAIRN_KAFKA_SASL_MECHANISM of the services' principals (the ACLs assume SCRAM users)."
  type        = string
  default     = "SCRAM-SHA-512"
}

variable "kafka_sasl_passwords" {
  description = "SCRAM password of each service's principal `cairn-<service>`, by service name (a Secret each)."
  type        = map(string)
  sensitive   = true
  default     = {}
}

variable "platform_key" {
  description = "Fernet key sealing stored secrets and deriving the services' signing credentials (Secret cairn-platform)."
  type        = string
  sensitive   = true
}

variable "bootstrap_admin_token" {
  description = "`CKIA<16 A-Z0-9>:<secret>` of the first admin key, made at start if absent (Secret cairn-platform)."
  type        = string
  sensitive   = true
}

variable "s3_endpoint" {
  description = "S3 API URL of MinIO (http://minio.minio.svc:9000); null for AWS S3."
  type        = string
  default     = null
}

variable "s3_bucket" {
  description = "Bucket (and optional /prefix) holding every Cairn document and artifact."
  type        = string
}

variable "s3_region" {
  description = "S3 region."
  type        = string
  default     = "us-east-1"
}

variable "s3_credentials_secret_name" {
  description = "Secret with keys `access-key` and `secret-key`; null when pods get IAM roles."
  type        = string
  default     = null
}

variable "redis_url" {
  description = "Online feature store, redis://host:port/db."
  type        = string
}

variable "otlp_endpoint" {
  description = "OpenTelemetry collector OTLP/HTTP URL (http://otel-collector:4318); null: no export."
  type        = string
  default     = null
}

variable "dask_enabled" {
  description = "Deploy a Dask scheduler and workers for distributed training (modules/dask)."
  type        = bool
  default     = true
}

variable "dask_workers" {
  description = "Dask workers: the largest instance_count a training job can get."
  type        = number
  default     = 2
}

variable "keda_enabled" {
  description = "Scale trainer worker pools with KEDA ScaledObjects (KEDA must be installed)."
  type        = bool
  default     = true
}

variable "gpu_enabled" {
  description = "Deploy the GPU trainer pool (GPU nodes with the NVIDIA device plugin)."
  type        = bool
  default     = false
}

variable "gateway_service_type" {
  description = "Service type of the gateway: ClusterIP, NodePort or LoadBalancer."
  type        = string
  default     = "ClusterIP"
}

variable "extra_settings" {
  description = "More CAIRN_* settings for every service (e.g. CAIRN_LOG_LEVEL)."
  type        = map(string)
  default     = {}
}
