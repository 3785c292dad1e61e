"""`python -m services.deployer` runs the deployer service."""

from services.deployer.app import service

service.run()
