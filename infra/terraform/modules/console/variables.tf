variable "namespace" {
  description = "Namespace to deploy into."
  type        = string
}

variable "image" {
  description = "Cairn image (infra/docker/Dockerfile)."
  type        = string
}

variable "settings" {
  description = "Shared CAIRN_* settings (Kafka, store, telemetry) from the root module."
  type        = map(string)
}

variable "extra_settings" {
  description = "More CAIRN_* settings for this service only (override the shared ones)."
  type        = map(string)
  default     = {}
}

variable "s3_credentials_secret_name" {
  description = "Secret with the S3 `access-key` and `secret-key`; null for IAM roles."
  type        = string
  default     = null
}

variable "platform_secret_name" {
  description = "Secret with `platform-key` and `admin-token` (mounted, read through CAIRN_*_FILE); null: none."
  type        = string
  default     = null
}

variable "kafka_sasl_secret_name" {
  description = "Secret with the `username` and `password` of this service's Kafka principal; null: no SASL."
  type        = string
  default     = null
}

variable "replicas" {
  description = "Replicas of the service."
  type        = number
  default     = 1
}

variable "resources" {
  description = "Container requests and limits."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  default = {
    # Pages and a proxy: light; the bus tail keeps a bounded ring of recent events in memory.
    requests = { cpu = "100m", memory = "256Mi" }
    limits   = { cpu = "500m", memory = "512Mi" }
  }
}
