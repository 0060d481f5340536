# aimd: the controller (`aimd run`) and the download Job (`aimd download`, `aimd probe`) in one
# image. AIMD_IMAGE in the manifests names this image so the Jobs run the same build.
#
#   docker build -t aimd:0.1.0 .

ARG PYTHON=python:3.12-slim-bookworm

# Build: a virtual environment holding aimd and its dependencies, without pip itself.
FROM ${PYTHON} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv --without-pip /opt/aimd
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aimd ./aimd
RUN pip --python /opt/aimd/bin/python install .

# Run: the same Python and that environment, as an unprivileged user; no sources, no build tools.
FROM ${PYTHON}
# HOME is /tmp, the one writable place under a read-only root filesystem (an emptyDir).
ENV PATH=/opt/aimd/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --gid 65532 aimd \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin aimd
COPY --from=build /opt/aimd /opt/aimd
# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["aimd"]
CMD ["run"]
