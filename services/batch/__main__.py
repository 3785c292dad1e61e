"""`python -m services.batch` runs the batch service (or a pool worker, CAIRN_BATCH_ROLE=worker)."""

from services.batch.app import service

service.run()
