# The hub's processes (validator, projector, API) in one image; the command picks one.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY leadhub ./leadhub
COPY schemas ./schemas
COPY producers ./producers
COPY processors ./processors
COPY consumers ./consumers
COPY config ./config
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["leadhub"]
CMD ["--help"]
