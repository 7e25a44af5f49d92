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
USER projector
ENV LOG_FORMAT=json
EXPOSE 8000
ENTRYPOINT ["projector"]
CMD ["run"]
