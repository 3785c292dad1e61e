variable "name" {
  description = "Name of the ScaledObject (the worker pool, e.g. trainer-cpu)."
  type        = string
}

variable "namespace" {
  description = "Namespace of the ScaledObject and its Deployment."
  type        = string
}

variable "deployment_name" {
  description = "The Deployment KEDA scales."
  type        = string
}

variable "bootstrap_servers" {
  description = "Kafka bootstrap servers KEDA reads consumer lag from."
  type        = string
}

variable "consumer_group" {
  description = "The pool's consumer group (e.g. cairn.trainer)."
  type        = string
}

variable "topics" {
  description = "Topics the pool consumes; one Kafka trigger each."
  type        = list(string)
}

variable "lag_threshold" {
  description = "Target consumer lag per replica (KEDA lagThreshold)."
  type        = number
}

variable "activation_lag_threshold" {
  description = "Lag above which the pool wakes from zero (KEDA activationLagThreshold)."
  type        = number
}

variable "min_replicas" {
  description = "Fewest replicas (0: scale to zero when idle)."
  type        = number
  default     = 0
}

variable "max_replicas" {
  description = "Most replicas; never above the topic's partitions (idle consumers do nothing)."
  type        = number
}

variable "cooldown_period_s" {
  description = "Seconds after the last activity before scaling to zero; also the scale-down window."
  type        = number
  default     = 60
}

variable "polling_interval_s" {
  description = "Seconds between KEDA's lag checks."
  type        = number
  default     = 2
}

variable "sasl_secret_name" {
  description = "Secret with `username` and `password` KEDA reads the lag with (SASL); null: no SASL."
  type        = string
  default     = null
}

variable "sasl_mechanism" {
  description = "SASL mechanism of that credential: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN."
  type        = string
  default     = "SCRAM-SHA-512"
}

variable "tls" {
  description = "Reach Kafka over TLS (SSL, SASL_SSL)."
  type        = bool
  default     = false
}
