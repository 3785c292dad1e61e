"""`python -m services.experiments` runs the experiments service."""

from services.experiments.app import service

service.run()
