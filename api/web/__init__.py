"""The web UI's templates (templates/), static files (static/) and the small helpers the
templates use (views.py). The routes are in api/server_web.py."""
