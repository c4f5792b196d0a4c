"""dojo's edge: the HTTP/WebSocket API on Ray Serve, the Python client and the CLI.

Inside the project, Ray's Serve is imported as ``from ray import serve as ray_serve``.
"""
