# The projector image: `projector run` (workers) and `projector serve` (API).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY projector ./projector
COPY api ./api
COPY schemas ./schemas
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 projector
COPY --from=build /install /usr/local
# The event contracts: the decoder compiles them at start-up.
COPY schemas /opt/projector/schemas
USER projector
ENV LOG_FORMAT=json PROJECTOR_SCHEMA_DIR=/opt/projector/schemas
EXPOSE 8000
ENTRYPOINT ["projector"]
CMD ["run"]
