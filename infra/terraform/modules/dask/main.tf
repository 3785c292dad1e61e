# A Dask cluster for distributed training (instance_count > 1): one scheduler Deployment and
# Service, and a worker Deployment to scale (by hand, an HPA, or the dask-kubernetes operator
# instead of this module). Workers run the Cairn image, so they import the trainer's callbacks.
locals {
  labels = { "app.kubernetes.io/part-of" = "cairn", "app.kubernetes.io/component" = "dask" }
}

resource "kubernetes_deployment_v1" "scheduler" {
  metadata {
    name      = "dask-scheduler"
    namespace = var.namespace
    labels    = local.labels
  }
  spec {
    replicas = 1
    selector {
      match_labels = { "app.kubernetes.io/name" = "dask-scheduler" }
    }
    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/name" = "dask-scheduler" })
      }
      spec {
        container {
          name    = "scheduler"
          image   = var.image
          command = ["dask", "scheduler", "--port", "8786", "--dashboard-address", ":8787"]
          port {
            container_port = 8786
          }
          port {
            container_port = 8787
          }
          resources {
            requests = var.scheduler_resources.requests
            limits   = var.scheduler_resources.limits
          }
        }
      }
    }
  }
}

resource "kubernetes_service_v1" "scheduler" {
  metadata {
    name      = "dask-scheduler"
    namespace = var.namespace
    labels    = local.labels
  }
  spec {
    selector = { "app.kubernetes.io/name" = "dask-scheduler" }
    port {
      name = "comm"
      port = 8786
    }
    port {
      name = "dashboard"
      port = 8787
    }
  }
}

resource "kubernetes_deployment_v1" "workers" {
  metadata {
    name      = "dask-worker"
    namespace = var.namespace
    labels    = local.labels
  }
  wait_for_rollout = false
  spec {
    replicas = var.workers
    selector {
      match_labels = { "app.kubernetes.io/name" = "dask-worker" }
    }
    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/name" = "dask-worker" })
      }
      spec {
        container {
          name  = "worker"
          image = var.image
          command = [
            "dask", "worker", "tcp://dask-scheduler.${var.namespace}.svc:8786",
            "--nworkers", "1", "--nthreads", tostring(var.threads_per_worker),
            "--memory-limit", var.worker_memory_limit,
          ]
          resources {
            requests = var.worker_resources.requests
            limits   = var.worker_resources.limits
          }
        }
      }
    }
  }
}
