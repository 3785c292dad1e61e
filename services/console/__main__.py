"""`python -m services.console` runs the console service."""

from services.console.app import service

service.run()
