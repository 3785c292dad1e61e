"""`python -m services.tuner` runs the tuner service."""

from services.tuner.app import service

service.run()
