# hsm-vault's image: the service, its officers' tool (`hsm-vault`, on PATH) and their scripts.
# SoftHSM2 is inside for development and CI; production mounts its HSM vendor's PKCS#11 module
# and sets VAULT_PKCS11_MODULE, VAULT_TOKEN_LABEL and VAULT_PIN_FILE (a mounted secret), and
# VAULT_DATABASE_URL_FILE for PostgreSQL (docs/deploy.md).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vault vault
COPY hsm hsm
COPY api api
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# Debian bookworm's versions, pinned: a rebuild gets the same HSM library.
ARG SOFTHSM2_VERSION=2.6.1-2.1
ARG OPENSC_VERSION=0.23.0-0.3+deb12u2
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      "softhsm2=${SOFTHSM2_VERSION}" "opensc=${OPENSC_VERSION}" \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 vault \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home vault
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY policies policies
COPY scripts scripts
ENV VAULT_VAR_DIR=/app/var \
    VAULT_LISTEN=0.0.0.0:8200 \
    VAULT_POLICIES_DIR=/app/policies \
    PYTHONUNBUFFERED=1
RUN mkdir -p /app/var && chown 10001:10001 /app/var
# Numeric, so that a runtime that refuses root (runAsNonRoot) can tell without a passwd file.
USER 10001:10001
EXPOSE 8200
# Liveness only: a container is restarted when its server does not answer, never because the
# HSM or the database is away. Load balancers probe readiness (/v1/sys/health) themselves.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["hsm-vault", "probe", "--timeout", "3"]
# Development: run `hsm-vault bootstrap` once on the /app/var volume first (token, keys,
# dev credentials). Production: `hsm-vault migrate` once per release, then serve.
CMD ["hsm-vault", "serve"]
