"""Small WSGI, ASGI and aiohttp apps that misbehave on request, and the harness that runs them."""
