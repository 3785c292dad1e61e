"""`python -m services.featurestore` runs the feature store service."""

from services.featurestore.app import service

service.run()
