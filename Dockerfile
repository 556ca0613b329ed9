# Development image: the service with SoftHSM2. Production mounts its HSM vendor's PKCS#11
# module and sets VAULT_PKCS11_MODULE, VAULT_TOKEN_LABEL and VAULT_PIN_FILE instead.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vault vault
COPY hsm hsm
COPY api api
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 opensc \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /app vault
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
WORKDIR /app
COPY policies policies
ENV VAULT_VAR_DIR=/app/var VAULT_LISTEN=0.0.0.0:8200 VAULT_POLICIES_DIR=/app/policies
RUN mkdir -p /app/var && chown vault /app/var
USER vault
EXPOSE 8200
# First start: set up the development token and keys under /app/var, then serve.
CMD ["sh", "-c", "hsm-vault bootstrap && exec hsm-vault serve"]
