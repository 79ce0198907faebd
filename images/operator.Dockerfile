# The llmtrain operator: kopf + the functional core. No torch, no Kubernetes client library.
#   docker build -f images/operator.Dockerfile -t ghcr.io/llmtrain/operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY trainer/ trainer/
COPY operator/ operator/
RUN python -m venv /opt/llmtrain \
 && /opt/llmtrain/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/llmtrain/bin/pip install --no-cache-dir -c constraints.txt ".[operator]"

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 1000 llmtrain && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin llmtrain
COPY --from=build /opt/llmtrain /opt/llmtrain
ENV PATH=/opt/llmtrain/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "llmtrain_operator"]
