"""`python -m services.monitor` runs the monitor service."""

from services.monitor.app import service

service.run()
