"""`python -m services.edge` runs the edge service."""

from services.edge.app import service

service.run()
