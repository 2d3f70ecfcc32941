# syntax=docker/dockerfile:1
# One image for stunnerd and the operator; the Helm chart picks the command
# (`stunnerd -c /etc/stunnerd/stunnerd.conf -w` or `stunner-operator`).
#
#   docker build -t stunner:0.1.0 .
#
# Stage 1 builds wheels for stunner and its runtime dependencies (the [operator] extra adds
# kopf and kubernetes-asyncio); stage 2 installs only those wheels, so no build tools, tests
# or sources end up in the image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stunner ./stunner
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[operator]"

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root, with the UID/GID the chart's securityContext uses.
RUN groupadd --system --gid 65532 stunner \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin stunner
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "stunner[operator]"
USER 65532:65532
# TURN (UDP/TCP 3478, TLS 3479), metrics, stunnerd health, operator liveness.
EXPOSE 3478/udp 3478/tcp 3479/tcp 8080/tcp 8086/tcp 8081/tcp
CMD ["stunnerd", "-c", "/etc/stunnerd/stunnerd.conf", "-w"]
