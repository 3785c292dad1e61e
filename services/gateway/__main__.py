"""`python -m services.gateway` runs the inference gateway."""

from services.gateway.app import service

service.run()
