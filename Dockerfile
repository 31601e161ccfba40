# syntax=docker/dockerfile:1
# The Airflow image of the production stack (docker-compose.yml): the official Airflow image with this
# project installed at the versions of uv.lock, and the DAGs, plugins, dbt project, expectations, policy
# and prompts baked in. Nothing is bind-mounted over them: what runs is what was built and reviewed.
#
#   docker compose build          (or: docker build -t governed-marketing-airflow:local .)
#
# The Airflow version below must equal the apache-airflow pin in uv.lock (tests/unit/test_compose_file.py
# checks it, and the build stops if the installed Airflow differs from the image's).
FROM apache/airflow:3.3.2-python3.11

# GMP_HOME (warehouse files, landing, outbox, exports, receipts, reports) lives on a named volume mounted
# here; the directory exists in the image so that a new volume starts owned by airflow, group 0 (the
# image runs with any uid in group 0). /opt/gmp-crm is where docker-compose.yml mounts CRM exports.
USER root
RUN mkdir -p /opt/gmp/home /opt/gmp-crm \
    && chown -R airflow:0 /opt/gmp /opt/gmp-crm \
    && chmod -R g+rwX /opt/gmp /opt/gmp-crm
USER airflow
WORKDIR /opt/airflow

ENV GMP_HOME=/opt/gmp/home \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False \
    DO_NOT_TRACK=1 \
    SCARF_ANALYTICS=false \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false

# 1. Third-party dependencies, exactly as locked. A pinned uv reads the lock (its format is newer than what
#    older uv releases understand); the image's own uv installs, keeping the image's Airflow as the
#    official "extending the image" recipe does (apache-airflow==${AIRFLOW_VERSION} next to the requirements).
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /tmp/uv-pinned/uv
COPY --chown=airflow:0 pyproject.toml uv.lock README.md /opt/airflow/
RUN /tmp/uv-pinned/uv export --project /opt/airflow --frozen --no-dev --no-emit-project --no-hashes \
        --format requirements.txt --output-file /tmp/requirements.txt \
    && uv pip install --no-cache "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements.txt \
    && python -c 'import os, airflow; v = airflow.__version__; assert v == os.environ["AIRFLOW_VERSION"], v' \
    && rm -rf /tmp/requirements.txt

# 2. The library, installed editable from /opt/airflow/plugins like in development, so that the `gmp` CLI,
#    the DAGs and Airflow's plugins folder import the same code and the project root (governance.yml,
#    dbt_project/) resolves to /opt/airflow.
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 expectations/ /opt/airflow/expectations/
RUN uv pip install --no-cache --no-deps --editable /opt/airflow

# 3. Policy, prompts, dbt project and DAGs (the files that change most, last).
COPY --chown=airflow:0 governance.yml /opt/airflow/governance.yml
COPY --chown=airflow:0 prompts/ /opt/airflow/prompts/
COPY --chown=airflow:0 dbt_project/ /opt/airflow/dbt_project/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/

# 4. The dbt manifest Cosmos renders build_marketing_models from, for the compose stack's postgres target
#    (dbt parse reads no data and opens no connection). The project stays group-writable: dbt writes
#    target/ and logs/ at run time, as whichever uid AIRFLOW_UID selects.
RUN DBT_TARGET=postgres GMP_WAREHOUSE=postgres GMP_HOME=/tmp/gmp-build gmp dbt-parse \
    && gmp policy check \
    && rm -rf /tmp/gmp-build /opt/airflow/dbt_project/logs \
    && chmod -R g+rwX /opt/airflow/dbt_project
