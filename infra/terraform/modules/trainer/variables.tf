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

variable "kafka_sasl_mechanism" {
  description = "SASL mechanism of the trainer's principal; KEDA reads the pools' lag with the same credential."
  type        = string
  default     = "SCRAM-SHA-512"
}

variable "keda_enabled" {
  description = "Scale the worker pools with KEDA ScaledObjects (KEDA must be installed)."
  type        = bool
  default     = true
}

variable "gpu_enabled" {
  description = "Deploy the GPU pool (nodes with nvidia.com/gpu and the NVIDIA device plugin)."
  type        = bool
  default     = false
}

variable "gpu_image" {
  description = "GPU trainer image (infra/docker/Dockerfile.gpu)."
  type        = string
  default     = null
}

variable "cpu_node_selector" {
  description = "Node labels of the CPU worker pool."
  type        = map(string)
  default     = {}
}

variable "cpu_tolerations" {
  description = "Taints the CPU workers tolerate."
  type = list(object({
    key      = string
    operator = string
    value    = optional(string)
    effect   = string
  }))
  default = []
}

variable "gpu_node_selector" {
  description = "Node labels of the GPU node pool."
  type        = map(string)
  default     = {}
}

variable "gpu_tolerations" {
  description = "Taints of the GPU node pool the GPU workers tolerate."
  type = list(object({
    key      = string
    operator = string
    value    = optional(string)
    effect   = string
  }))
  default = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
}

variable "dask_scheduler" {
  description = "tcp://host:8786 of the Dask scheduler for instance_count > 1 (modules/dask); null: a LocalCluster per job."
  type        = string
  default     = null
}

variable "gpu_consumer_group" {
  description = "Consumer group of the GPU pool (it alone reads GPU jobs)."
  type        = string
  default     = "cairn.trainer.gpu"
}

variable "gpu_topics" {
  description = "Topics the GPU pool consumes (GpuTrainingJobRequested)."
  type        = list(string)
  default     = ["cairn.trainer.gpu-training-job-requested"]
}

variable "consumer_group" {
  description = "Consumer group of the CPU workers (and the API replica)."
  type        = string
  default     = "cairn.trainer"
}

variable "topics" {
  description = "Topics the worker pools consume (TrainingJobRequested, 8 partitions)."
  type        = list(string)
  default     = ["cairn.trainer.training-job-requested"]
}

# The numbers of the trainer's declared pools (services.trainer.pools.TRAINER_POOLS); a test keeps them equal.
variable "cpu_pool" {
  description = "KEDA numbers of the CPU worker pool."
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
    activation_lag_threshold = 1
    min_replicas             = 0
    max_replicas             = 6
    cooldown_period_s        = 60
    polling_interval_s       = 2
  }
}

variable "gpu_pool" {
  description = "KEDA numbers of the GPU worker pool (one nvidia.com/gpu per replica)."
  type = object({
    lag_threshold            = number
    activation_lag_threshold = number
    min_replicas             = number
    max_replicas             = number
    cooldown_period_s        = number
    polling_interval_s       = number
  })
  default = {
    lag_threshold            = 1
    activation_lag_threshold = 0
    min_replicas             = 0
    max_replicas             = 2
    cooldown_period_s        = 120
    polling_interval_s       = 2
  }
}

variable "worker_resources" {
  description = "Requests and limits of one CPU worker."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  default = {
    requests = { cpu = "1", memory = "2Gi" }
    limits   = { cpu = "2", memory = "4Gi" }
  }
}

variable "gpu_worker_resources" {
  description = "Requests and limits of one GPU worker (nvidia.com/gpu is added)."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  default = {
    requests = { cpu = "2", memory = "8Gi" }
    limits   = { cpu = "4", memory = "16Gi" }
  }
}
