"""Small real services the runtime tests discover through CAIRN_SERVICES_PATHS."""
