"""`python -m services.ingest` runs the ingest service."""

from services.ingest.app import service

service.run()
