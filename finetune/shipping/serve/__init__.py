"""``zoo serve``: a model behind an HTTP API (FastAPI + uvicorn) with a page to try it in a browser."""
