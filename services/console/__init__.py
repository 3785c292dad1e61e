"""console: the platform's web console (Cairn's Studio), a page per area over the services' APIs."""

HTTP_PORT = 8090
