variable "namespace" {
  description = "Namespace to deploy into."
  type        = string
}

variable "image" {
  description = "Cairn image (it carries dask[distributed] and the trainer's code)."
  type        = string
}

variable "workers" {
  description = "Dask worker replicas: the most instance_count a job can get."
  type        = number
  default     = 2
}

variable "threads_per_worker" {
  description = "Threads per Dask worker (match the worker's CPU limit)."
  type        = number
  default     = 2
}

variable "worker_memory_limit" {
  description = "Dask's own memory limit per worker (spills, then pauses, before the kernel kills)."
  type        = string
  default     = "3GiB"
}

variable "scheduler_resources" {
  description = "Requests and limits of the scheduler."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  default = {
    requests = { cpu = "250m", memory = "512Mi" }
    limits   = { cpu = "1", memory = "2Gi" }
  }
}

variable "worker_resources" {
  description = "Requests and limits of one worker."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  default = {
    requests = { cpu = "1", memory = "2Gi" }
    limits   = { cpu = "2", memory = "4Gi" }
  }
}
