variable "kubeconfig_path" {
  description = "Kubeconfig of the target cluster."
  type        = string
  default     = "~/.kube/config"
}

variable "kubeconfig_context" {
  description = "Kubeconfig context; null: the current one."
  type        = string
  default     = null
}

variable "namespace" {
  description = "Namespace to create."
  type        = string
  default     = "cairn"
}

variable "image" {
  description = "Cairn image pushed to a registry the cluster pulls from."
  type        = string
}

variable "gpu_image" {
  description = "GPU trainer image (with gpu_enabled)."
  type        = string
  default     = null
}

variable "kafka_bootstrap_servers" {
  description = "Kafka bootstrap servers."
  type        = string
  default     = "kafka.kafka.svc:9092"
}

variable "kafka_sasl_passwords" {
  description = "SCRAM-SHA-512 password of `cairn-<service>` for each service (the users your Kafka has)."
  type        = map(string)
  sensitive   = true
}

variable "platform_key" {
  description = "Fernet key (infra/secrets/README.md); e.g. TF_VAR_platform_key=\"$(cat infra/secrets/platform.key)\"."
  type        = string
  sensitive   = true
}

variable "bootstrap_admin_token" {
  description = "First admin key `CKIA<16 A-Z0-9>:<secret>`; e.g. TF_VAR_bootstrap_admin_token=\"$(cat infra/secrets/admin-token)\"."
  type        = string
  sensitive   = true
}

variable "s3_endpoint" {
  description = "MinIO S3 URL; null for AWS S3."
  type        = string
  default     = "http://minio.minio.svc:9000"
}

variable "s3_bucket" {
  description = "Existing bucket for Cairn."
  type        = string
  default     = "cairn"
}

variable "s3_access_key" {
  description = "S3 access key (stored in the cairn-s3 Secret)."
  type        = string
  sensitive   = true
}

variable "s3_secret_key" {
  description = "S3 secret key (stored in the cairn-s3 Secret)."
  type        = string
  sensitive   = true
}

variable "redis_url" {
  description = "Redis for the online feature store."
  type        = string
  default     = "redis://redis-master.redis.svc:6379/0"
}

variable "otlp_endpoint" {
  description = "OTLP/HTTP collector URL; null: no export."
  type        = string
  default     = "http://otel-collector.observability.svc:4318"
}

variable "keda_enabled" {
  description = "KEDA ScaledObjects for the trainer pools (KEDA installed beforehand)."
  type        = bool
  default     = true
}

variable "gpu_enabled" {
  description = "Deploy the GPU trainer pool."
  type        = bool
  default     = false
}
