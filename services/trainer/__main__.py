"""`python -m services.trainer` runs the trainer service."""

from services.trainer.app import service

service.run()
