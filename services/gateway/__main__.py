"""`python -m services.gateway` runs the inference gateway: one process of its pool
(`services.gateway.instances`); the first one starts the others on the same port."""

from services.gateway.instances import serve

serve()
