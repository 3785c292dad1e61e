"""`python -m tests.services.echo` runs the echo service."""

from .app import service

service.run()
