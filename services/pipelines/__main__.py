"""`python -m services.pipelines` runs the pipelines service."""

from services.pipelines.app import service

service.run()
