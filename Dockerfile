# syntax=docker/dockerfile:1
# One image for `radservice serve` and `radservice worker` (docker-compose.yml runs both).
# Build: docker build -t radservice .    The Whisper models (tiny.en, base) are pip packages and
# so are inside; nothing is downloaded when the container runs.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# --- the Python environment: radservice and its dependencies (wheels only, no compilers) ---
FROM ${PYTHON_IMAGE} AS python-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/radservice
COPY pyproject.toml README.md ./
COPY radservice ./radservice
COPY integrations ./integrations
# radservice itself is pure Python; its dependencies are taken as wheels (no compiler needed)
RUN /opt/radservice/bin/pip install --no-cache-dir --prefer-binary . \
    && /opt/radservice/bin/python -c "from radservice.pipeline.transcribe import resolve_model; resolve_model('tiny.en'); resolve_model('base')"

# --- the page's npm packages (package-lock.json), without the test tools ---
FROM ${NODE_IMAGE} AS web-build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- the image that runs ---
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="radservice" \
      org.opencontainers.image.description="Radiology dictation and reporting: HL7 orders in, Whisper dictation, signed reports out as HL7 ORU and DICOM SR" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 radservice \
    && useradd --system --uid 10001 --gid radservice --home-dir /app --no-create-home --shell /usr/sbin/nologin radservice \
    && mkdir -p /var/lib/radservice /etc/radservice \
    && chown radservice:radservice /var/lib/radservice
COPY --from=python-build /opt/radservice /opt/radservice
COPY --from=web-build /src/node_modules /app/node_modules
COPY config /app/config
WORKDIR /app
ENV PATH=/opt/radservice/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RADSERVICE_WEB__VENDOR_DIR=/app/node_modules \
    RADSERVICE_STORAGE__DATA_DIR=/var/lib/radservice
USER 10001:10001
VOLUME ["/var/lib/radservice"]
# HTTP API and page, MLLP (orders in), DICOM (C-ECHO)
EXPOSE 8000 2575 11112
# /healthz of the API on this container, on the port and scheme the config says (a worker
# container has no API: docker-compose.yml switches this check off for workers)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "radservice.healthcheck"]
ENTRYPOINT ["radservice"]
CMD ["serve"]
