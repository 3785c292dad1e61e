"""gateway: HTTP inference (SageMaker runtime API + Open Inference Protocol v2) for endpoints."""

HTTP_PORT = 8080
