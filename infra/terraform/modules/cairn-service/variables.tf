variable "name" {
  description = "Kubernetes name of the Deployment, Service and ConfigMap (e.g. trainer-cpu)."
  type        = string
}

variable "service" {
  description = "The Cairn service the container runs (`cairn serve <service>`)."
  type        = string
}

variable "namespace" {
  description = "Namespace to deploy into."
  type        = string
}

variable "image" {
  description = "Cairn image (infra/docker/Dockerfile or Dockerfile.gpu)."
  type        = string
}

variable "image_pull_policy" {
  description = "Always, IfNotPresent or Never."
  type        = string
  default     = "IfNotPresent"
}

variable "replicas" {
  description = "Initial replicas; an HPA or KEDA ScaledObject owns the count afterwards."
  type        = number
  default     = 1
}

variable "env" {
  description = "CAIRN_* settings, stored in the service's ConfigMap."
  type        = map(string)
  default     = {}
}

variable "s3_credentials_secret_name" {
  description = "Secret holding the S3 access and secret keys; null for IAM roles (IRSA)."
  type        = string
  default     = null
}

variable "s3_access_key_secret_key" {
  description = "Key of the access key inside the credentials Secret."
  type        = string
  default     = "access-key"
}

variable "s3_secret_key_secret_key" {
  description = "Key of the secret key inside the credentials Secret."
  type        = string
  default     = "secret-key"
}

variable "platform_secret_name" {
  description = "Secret with `platform-key` and `admin-token`, mounted read-only; null: none (auth needs it)."
  type        = string
  default     = null
}

variable "kafka_sasl_secret_name" {
  description = "Secret with `username` and `password` of the service's Kafka principal, mounted; null: no SASL."
  type        = string
  default     = null
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

variable "gpus" {
  description = "nvidia.com/gpu each pod requests (0: none)."
  type        = number
  default     = 0
}

variable "node_selector" {
  description = "Node labels the pods must land on (e.g. a GPU node pool)."
  type        = map(string)
  default     = {}
}

variable "tolerations" {
  description = "Taints the pods tolerate (GPU node pools are usually tainted)."
  type = list(object({
    key      = string
    operator = string
    value    = optional(string)
    effect   = string
  }))
  default = []
}

variable "service_type" {
  description = "Kubernetes Service type: ClusterIP, NodePort or LoadBalancer."
  type        = string
  default     = "ClusterIP"
}

variable "termination_grace_period_s" {
  description = "Seconds between SIGTERM and SIGKILL; in-flight handlers finish and commit."
  type        = number
  default     = 60
}

variable "hpa" {
  description = "CPU-based HorizontalPodAutoscaler (the gateway); null: none."
  type = object({
    min_replicas           = number
    max_replicas           = number
    cpu_utilization_target = number
  })
  default = null
}

variable "labels" {
  description = "Extra labels on every object."
  type        = map(string)
  default     = {}
}
