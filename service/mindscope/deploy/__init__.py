"""Ways to run the service beyond one uvicorn process."""
