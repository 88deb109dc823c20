"""The FastAPI service: `main.create_app` builds it, `routes/` holds one router per resource."""
