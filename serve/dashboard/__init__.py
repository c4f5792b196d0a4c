"""The web dashboard at ``/dashboard``, served by the API itself.

``router`` is included by ``serve.app.create_app``. The pages are static
HTML, CSS and ES modules in ``static/`` (no CDN, no build step); ``routes``
holds the login, the data and WebSocket routes (calling the API's handlers in
``serve.routes``), ``session`` the signed cookie and CSRF rules, ``export``
the history export behind ``dojo export``.
"""

from .routes import router

__all__ = ["router"]
