"""`python -m services.autoscaler` runs the autoscaler service."""

from services.autoscaler.app import service

service.run()
