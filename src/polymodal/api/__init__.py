"""HTTP API: thin FastAPI routers, error rendering, middleware."""
