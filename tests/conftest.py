"""Shared fixtures: real servers on free loopback ports, and the shared demo platform."""

pytest_plugins = [
    "tests.support.moto_server",
    "tests.support.tansu",
    "tests.support.redis_server",
    "tests.support.demo_platform",
    "tests.support.browser",
    "tests.support.docker_engine",
]
