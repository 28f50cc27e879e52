# LinkFlow image: one image for every role.
#   docker build -t linkflow .
#   docker run --rm linkflow run gateway      (default: run all)
# See docker-compose.yml for PostgreSQL, Redis, the migration and one container per role.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --system --create-home --uid 10001 --user-group linkflow
USER linkflow
WORKDIR /home/linkflow
# gateway HTTP (LINKFLOW_HTTP_PORT) and per-role metrics/health (LINKFLOW_METRICS_PORT)
EXPOSE 8000 9100
ENTRYPOINT ["linkflow"]
CMD ["run", "all"]
