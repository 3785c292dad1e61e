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
    requests = { cpu = "250m", memory = "512Mi" }
    limits   = { cpu = "1", memory = "1Gi" }
  }
}


variable "bootstrap_servers" {
  description = "Kafka bootstrap servers KEDA reads the pools' consumer lag from."
  type        = string
}

variable "keda_enabled" {
  description = "Scale the worker pools with KEDA ScaledObjects (KEDA must be installed)."
  type        = bool
  default     = true
}

variable "kafka_sasl_mechanism" {
  description = "SASL mechanism of the trainer's principal; KEDA reads the pools' lag with the same credential."
  type        = string
  default     = "SCRAM-SHA-512"
}

variable "consumer_group" {
  description = "Consumer group every batch worker joins."
  type        = string
  default     = "cairn.batch.workers"
}

variable "topics" {
  description = "Topics the worker pool consumes (TransformShardRequested, 8 partitions)."
  type        = list(string)
  default     = ["cairn.batch.transform-shard-requested"]
}

# The numbers of the batch service's declared pool (services.batch.pools.BATCH_POOL).
variable "pool" {
  description = "KEDA numbers of the batch worker pool."
  type = object({
    lag_threshold            = number
    activation_lag_threshold = number
    min_replicas             = number
    max_replicas             = number
    cooldown_period_s        = number
    polling_interval_s       = number
  })
  default = {
    lag_threshold            = 2
    activation_lag_threshold = 0
    min_replicas             = 0
    max_replicas             = 8
    cooldown_period_s        = 60
    polling_interval_s       = 2
  }
}

variable "worker_resources" {
  description = "Requests and limits of one batch worker."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  default = {
    requests = { cpu = "1", memory = "2Gi" }
    limits   = { cpu = "2", memory = "4Gi" }
  }
}
