# syntax=docker/dockerfile:1.7
# The Triton image: NGC's tritonserver (server, Python backend, CUDA) plus CUDA torch, OpenAI Triton,
# the kernels/ and models/ packages the Python-backend models import, and the model repository
# rendered with the gpu profile of deploy/model-profiles.yaml.
#
#   docker build -f deploy/docker/triton.Dockerfile -t ghcr.io/tritonfleet/triton:0.1.0 .
#
# NGC 25.01 ships Python 3.12 and runs as the non-root user triton-server (uid 1000), which the
# chart's securityContext expects.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3

# Render the repository in a small stage: it needs only pyyaml and the Triton config protobufs.
FROM python:3.12-slim AS models
WORKDIR /src
COPY requirements.lock ./
RUN pip install --no-cache-dir -c requirements.lock pyyaml protobuf "tritonclient[grpc]"
COPY deploy/model-profiles.yaml deploy/model-profiles.yaml
COPY model_repository/ model_repository/
COPY models/ models/
RUN python -c "from pathlib import Path; from models.profiles import render_repository; \
render_repository('gpu', Path('/models'), source=Path('model_repository'), profiles=Path('deploy/model-profiles.yaml'))"

FROM ${TRITON_IMAGE}
# Dependencies from the lock's pins, before any source, so a code change reuses this layer. torch
# comes as its default CUDA build here (the lock's +cpu build is for the CPU-only dev machines);
# numpy stays below 2 for the Python-backend stub.
RUN pip install --no-cache-dir torch==2.13.0 triton==3.9.0 numpy==1.26.4 pillow==13.0.0 \
 && rm -rf /root/.cache
COPY --chown=1000:1000 kernels/ /opt/tritonfleet/kernels/
COPY --chown=1000:1000 models/ /opt/tritonfleet/models/
COPY --from=models --chown=1000:1000 /models /models
ENV PYTHONPATH=/opt/tritonfleet \
    TRITON_CACHE_DIR=/cache/triton
USER 1000:1000
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models"]
