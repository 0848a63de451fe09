# The mindscope service on CPU TensorFlow. The model store is mounted at /models (read-only).
# GPU: build with --build-arg TF_EXTRA=gpu (installs tensorflow[and-cuda]; see docker-compose.yml).
FROM python:3.11-slim
ARG TF_EXTRA=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MINDSCOPE_MODEL_STORE_DIR=/models
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir ".${TF_EXTRA:+[$TF_EXTRA]}"
RUN useradd --create-home --uid 10001 mindscope
USER mindscope
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["mindscope", "serve", "--host", "0.0.0.0", "--port", "8000"]
