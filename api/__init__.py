"""The HTTP service (FastAPI: one router per resource in server_*.py, their dependencies
in services.py and server_auth.py) and the web UI (api/web/)."""
