"""`python -m services.labeling` runs the labeling service."""

from services.labeling.app import service

service.run()
