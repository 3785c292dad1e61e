"""Shared fixtures: real servers on free loopback ports (see tests/support/)."""

pytest_plugins = [
    "tests.support.moto_server",
    "tests.support.tansu",
    "tests.support.redis_server",
]
