"""The production stack (docker-compose.yml, Dockerfile, .env.example) checked by parsing it.

No Docker engine runs here, so these tests are what stands between a typo and a stack that does not
start: every service has an image and a healthcheck, the Airflow services are the upstream 3.x layout
with the CeleryExecutor, secrets are required rather than defaulted, every variable the file reads is
documented, and the image's Airflow is the version uv.lock pins.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from governed_marketing.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

#: The Airflow services and the command each runs (the official image's entrypoint takes them).
AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
#: What each long-running service's healthcheck must ask (as upstream's docker-compose.yaml does).
HEALTHCHECKS = {
    "airflow-apiserver": "http://localhost:8080/api/v2/version",
    "airflow-scheduler": "http://localhost:8974/health",
    "airflow-dag-processor": "--job-type DagProcessorJob",
    "airflow-triggerer": "--job-type TriggererJob",
    "airflow-worker": "inspect ping",
    "postgres": "pg_isready",
    "warehouse": "pg_isready",
    "redis": "redis-cli",
}
EXPECTED_SERVICES = {*AIRFLOW_COMMANDS, "airflow-init", "postgres", "redis", "warehouse"}
#: Must come from .env and stop `docker compose` when missing or empty (${VAR:?message}).
REQUIRED_SECRETS = {
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__FERNET_KEY",
    "_AIRFLOW_WWW_USER_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "GMP_PSEUDONYM_KEY",
    "GMP_AUDIT_KEY",
    "GMP_PG_PASSWORD",
}
#: GMP_* variables in .env.example that are not fields of governed_marketing.settings.Settings, and why.
NOT_SETTINGS = {
    # Read by dbt_project/profiles.yml (the `postgres` target); test_pg_variables_are_read_by_dbt checks it.
    "GMP_PG_HOST": "dbt profiles.yml",
    "GMP_PG_PORT": "dbt profiles.yml",
    "GMP_PG_USER": "dbt profiles.yml",
    "GMP_PG_PASSWORD": "dbt profiles.yml",
    "GMP_PG_DATABASE": "dbt profiles.yml",
    # The warehouse switch (duckdb|postgres) is being added to Settings as `warehouse` in issue 7;
    # until that lands compose sets it for the code that reads it.
    "GMP_WAREHOUSE": "Settings.warehouse (issue 7)",
}

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}, ${VAR:+x}; `$$` escapes a `$`.
_VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
_BARE_VARIABLE = re.compile(r"(?<!\$)\$(?![${])[A-Za-z_]")


# ---- helpers (unit-tested below on small bad inputs) ----------------------------------------------------
def compose_variables(text: str) -> list[tuple[str, str | None]]:
    """Every (variable, operator) docker compose interpolates in `text`; `$${X}` is an escape, not a variable."""
    return [(m["name"], m["op"]) for m in _VARIABLE.finditer(text)]


def without_comment_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def env_example_variables(text: str) -> dict[str, str]:
    """`NAME=value` lines of an .env file."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match:
            found[match[1]] = match[2]
    return found


def undocumented_env_lines(text: str) -> list[str]:
    """Variables of an .env file without a comment line directly above them."""
    lines = text.splitlines()
    return [
        line.split("=", 1)[0]
        for index, line in enumerate(lines)
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line) and (index == 0 or not lines[index - 1].startswith("#"))
    ]


def _depends_on(service: dict) -> dict[str, str | None]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):  # the short form has no condition
        return dict.fromkeys(depends)
    return {name: (spec or {}).get("condition") for name, spec in depends.items()}


def compose_problems(doc: dict) -> list[str]:
    """What keeps a compose file from starting reliably: one line per problem, naming the service."""
    services = doc.get("services") or {}
    if not services:
        return ["no services"]
    one_shots = {
        dependency
        for service in services.values()
        for dependency, condition in _depends_on(service).items()
        if condition == "service_completed_successfully"
    }
    problems = []
    for name, service in services.items():
        if not (service.get("image") or service.get("build")):
            problems.append(f"{name}: neither image nor build")
        if not service.get("restart"):
            problems.append(f"{name}: no restart policy")
        for dependency, condition in _depends_on(service).items():
            if dependency not in services:
                problems.append(f"{name}: depends on unknown service {dependency}")
            elif condition not in ("service_healthy", "service_completed_successfully"):
                problems.append(f"{name}: depends on {dependency} without service_healthy/completed condition")
            elif condition == "service_healthy" and dependency in one_shots:
                problems.append(f"{name}: waits for one-shot {dependency} to be healthy")
        if name in one_shots:
            # A one-shot's health is its exit status; it must not be restarted forever.
            if str(service.get("restart")) not in ("no", "on-failure"):
                problems.append(f"{name}: one-shot with restart {service.get('restart')!r}")
            continue
        healthcheck = service.get("healthcheck") or {}
        if healthcheck.get("disable") or not healthcheck.get("test"):
            problems.append(f"{name}: no healthcheck test")
        if service.get("build") and not service.get("command"):
            problems.append(f"{name}: built from the Airflow image but has no command")
    return problems


def _healthcheck_text(service: dict) -> str:
    test = (service.get("healthcheck") or {}).get("test") or []
    return " ".join(test) if isinstance(test, list) else str(test)


def _command_text(service: dict) -> str:
    command = service.get("command") or ""
    return " ".join(command) if isinstance(command, list) else str(command)


def dockerfile_from(text: str) -> tuple[str, str | None]:
    """(Airflow version, Python version) of the Dockerfile's `FROM apache/airflow:X[-pythonY]` line."""
    for line in text.splitlines():
        match = re.match(r"^FROM\s+apache/airflow:(\d+\.\d+\.\d+)(?:-python(\d+\.\d+))?(\s|$)", line.strip())
        if match:
            return match[1], match[2]
    raise AssertionError("Dockerfile: no FROM apache/airflow:<version> line")


# ---- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose_text() -> str:
    """docker-compose.yml without its comment lines (compose interpolates no comments)."""
    return without_comment_lines(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the x-airflow-common anchors and `<<:` merges


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return env_example_variables(ENV_EXAMPLE.read_text())


# ---- the helpers can fail ------------------------------------------------------------------------------------
GOOD = {
    "services": {
        "db": {"image": "postgres:16", "restart": "always", "healthcheck": {"test": ["CMD", "pg_isready"]}},
        "init": {"build": ".", "command": "x", "restart": "no", "depends_on": {"db": {"condition": "service_healthy"}}},
        "app": {
            "build": ".",
            "command": "scheduler",
            "restart": "always",
            "healthcheck": {"test": ["CMD", "true"]},
            "depends_on": {"init": {"condition": "service_completed_successfully"}},
        },
    }
}


def _spoiled(service: str, **changes) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    for key, value in changes.items():
        if value is None:
            doc["services"][service].pop(key, None)
        else:
            doc["services"][service][key] = value
    return doc


def test_the_checker_accepts_a_good_file() -> None:
    assert compose_problems(GOOD) == []


@pytest.mark.parametrize(
    ("service", "changes", "expected"),
    [
        ("db", {"healthcheck": None}, "db: no healthcheck test"),
        ("db", {"healthcheck": {"test": ["CMD", "x"], "disable": True}}, "db: no healthcheck test"),
        ("db", {"image": None}, "db: neither image nor build"),
        ("db", {"restart": None}, "db: no restart policy"),
        ("app", {"command": None}, "app: built from the Airflow image but has no command"),
        ("app", {"depends_on": ["init"]}, "app: depends on init without service_healthy/completed condition"),
        ("app", {"depends_on": {"cache": {"condition": "service_healthy"}}}, "app: depends on unknown service cache"),
        ("init", {"restart": "always"}, "init: one-shot with restart 'always'"),
    ],
)
def test_the_checker_names_what_is_wrong(service: str, changes: dict, expected: str) -> None:
    assert expected in compose_problems(_spoiled(service, **changes))


def test_variables_are_found_in_every_form_and_escapes_are_not() -> None:
    text = 'a: ${A}\nb: "${B:-x}" ${C-y}\nc: ${D:?set D in .env (really)}\nd: $${HOSTNAME} ${E?m} ${F:+z}'
    assert compose_variables(text) == [("A", None), ("B", ":-"), ("C", "-"), ("D", ":?"), ("E", "?"), ("F", ":+")]
    assert _BARE_VARIABLE.search("x: $HOME") and not _BARE_VARIABLE.search("x: $${HOME} $$HOME ${HOME}")


def test_comment_lines_are_dropped() -> None:
    assert without_comment_lines("# ${A}\nb: ${B}  # ${C}\n  # ${D}") == "b: ${B}  # ${C}"


def test_env_file_helpers() -> None:
    text = "# A\nA=1\nB=\n\n# C\n# more\nC=x=y\n"
    assert env_example_variables(text) == {"A": "1", "B": "", "C": "x=y"}
    assert undocumented_env_lines(text) == ["B"]


def test_dockerfile_from_parsing() -> None:
    assert dockerfile_from("FROM apache/airflow:3.3.2-python3.11\n") == ("3.3.2", "3.11")
    assert dockerfile_from("# x\nFROM apache/airflow:3.3.1 AS base\n") == ("3.3.1", None)
    with pytest.raises(AssertionError):
        dockerfile_from("FROM python:3.11\n")


# ---- docker-compose.yml -------------------------------------------------------------------------------------
def test_the_compose_file_has_no_problems(compose: dict) -> None:
    assert compose_problems(compose) == []


def test_the_expected_services_exist(services: dict) -> None:
    assert set(services) >= EXPECTED_SERVICES
    assert set(services) - EXPECTED_SERVICES == set(), "a new service: add it to the expectations above"


def test_airflow_services_run_their_command_from_the_built_image(services: dict) -> None:
    for name, command in AIRFLOW_COMMANDS.items():
        assert services[name].get("build"), name
        assert _command_text(services[name]) == command, name
    assert services["airflow-apiserver"]["ports"] == ["8080:8080"]
    init = services["airflow-init"]
    assert init.get("build")
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init["environment"]["_AIRFLOW_WWW_USER_CREATE"] == "true"
    for name in AIRFLOW_COMMANDS:
        assert _depends_on(services[name]).get("airflow-init") == "service_completed_successfully", name


@pytest.mark.parametrize(("name", "expected"), sorted(HEALTHCHECKS.items()))
def test_each_healthcheck_asks_the_right_thing(services: dict, name: str, expected: str) -> None:
    assert expected in _healthcheck_text(services[name])


def test_celery_executor_with_redis_broker_and_postgres_backends(services: dict) -> None:
    for name in [*AIRFLOW_COMMANDS, "airflow-init"]:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert (
            env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
            and "@redis:6379" in env["AIRFLOW__CELERY__BROKER_URL"]
        ), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].endswith("@postgres/airflow"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name


def test_no_examples_and_no_telemetry(services: dict) -> None:
    for name in [*AIRFLOW_COMMANDS, "airflow-init"]:
        env = services[name]["environment"]
        assert str(env["AIRFLOW__CORE__LOAD_EXAMPLES"]).lower() == "false", name
        assert str(env["AIRFLOW__COSMOS__ENABLE_TELEMETRY"]).lower() == "false", name
        assert str(env["DO_NOT_TRACK"]) == "1", name
        assert str(env["DBT_SEND_ANONYMOUS_USAGE_STATS"]).lower() == "false", name


def test_every_airflow_service_shares_the_same_keys(services: dict) -> None:
    """A JWT secret or Fernet key that differs between services breaks task auth or decryption."""
    shared = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY")
    seen = {key: {services[name]["environment"][key] for name in [*AIRFLOW_COMMANDS, "airflow-init"]} for key in shared}
    assert all(len(values) == 1 for values in seen.values()), seen


def test_the_worker_runs_the_product_in_production_on_the_postgres_warehouse(services: dict) -> None:
    env = services["airflow-worker"]["environment"]
    assert env["GMP_ENV"] == "production"
    assert env["GMP_WAREHOUSE"] == "postgres" and env["DBT_TARGET"] == "postgres"
    assert env["GMP_PG_HOST"] == "warehouse"
    for key in ("GMP_PG_PORT", "GMP_PG_USER", "GMP_PG_PASSWORD", "GMP_PG_DATABASE", "GMP_PSEUDONYM_KEY"):
        assert env.get(key), key
    warehouse = services["warehouse"]
    assert warehouse["image"].startswith("postgres:")
    assert "${GMP_PG_PASSWORD:?" in warehouse["environment"]["POSTGRES_PASSWORD"]
    assert "${GMP_PG_DATABASE" in warehouse["environment"]["POSTGRES_DB"]
    assert "${GMP_PG_USER" in warehouse["environment"]["POSTGRES_USER"]


def test_gmp_home_is_a_named_volume_shared_by_the_airflow_services(compose: dict, services: dict) -> None:
    for name in [*AIRFLOW_COMMANDS, "airflow-init"]:
        home = services[name]["environment"]["GMP_HOME"]
        mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in services[name]["volumes"]}
        assert home in mounts, name
        assert mounts[home] in compose["volumes"], f"{name}: GMP_HOME is not on a named volume"


def test_init_creates_the_pool_the_dags_use(services: dict) -> None:
    tree = ast.parse((ROOT / "plugins" / "governed_marketing" / "orchestration" / "assets.py").read_text())
    pool = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "WAREHOUSE_POOL" for t in node.targets)
    )
    assert f"airflow pools set {pool} " in _command_text(services["airflow-init"])


def test_secrets_are_required_not_defaulted(compose_text: str) -> None:
    uses: dict[str, set] = {}
    for name, operator in compose_variables(compose_text):
        uses.setdefault(name, set()).add(operator)
    for secret in sorted(REQUIRED_SECRETS):
        assert secret in uses, f"{secret} is not read from .env"
        assert uses[secret] == {":?"}, f"{secret} must be ${{{secret}:?message}} everywhere, found {uses[secret]}"


def test_only_braced_variables(compose_text: str) -> None:
    assert [line for line in compose_text.splitlines() if _BARE_VARIABLE.search(line)] == []


# ---- .env.example ------------------------------------------------------------------------------------------
def test_every_compose_variable_is_documented_in_env_example(compose_text: str, env_example: dict) -> None:
    missing = sorted({name for name, _ in compose_variables(compose_text)} - set(env_example))
    assert missing == [], f"add to .env.example (a comment line and NAME=): {missing}"


def test_every_env_example_variable_has_a_comment() -> None:
    assert undocumented_env_lines(ENV_EXAMPLE.read_text()) == []


def test_env_example_holds_no_secret_values(env_example: dict) -> None:
    for secret in REQUIRED_SECRETS | {"OPENAI_API_KEY"}:
        assert env_example.get(secret) == "", f"{secret} must stay empty in .env.example"


def test_gmp_variables_are_settings_or_explained(env_example: dict) -> None:
    fields = set(Settings.model_fields)
    prefix = Settings.model_config["env_prefix"]
    assert prefix == "GMP_"
    unknown = [
        name
        for name in env_example
        if name.startswith(prefix) and name[len(prefix) :].lower() not in fields and name not in NOT_SETTINGS
    ]
    assert unknown == [], f"neither a Settings field nor explained in NOT_SETTINGS: {unknown}"


def test_pg_variables_are_read_by_dbt() -> None:
    profiles = (ROOT / "dbt_project" / "profiles.yml").read_text()
    for name, reason in NOT_SETTINGS.items():
        if reason == "dbt profiles.yml":
            assert f"env_var('{name}'" in profiles, name


# ---- Dockerfile --------------------------------------------------------------------------------------------------
def test_the_image_is_the_official_airflow_of_uv_lock() -> None:
    version, python = dockerfile_from(DOCKERFILE.read_text())
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    pinned = {package["name"]: package["version"] for package in lock["package"]}
    assert version.startswith("3.3.")
    assert version == pinned["apache-airflow"], f"Dockerfile {version} != uv.lock {pinned['apache-airflow']}"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python is not None and python in requires, f"python{python} vs requires-python {requires}"


def test_the_image_contains_the_project() -> None:
    text = DOCKERFILE.read_text()
    copied = " ".join(re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", text, flags=re.MULTILINE))
    for part in ("dags/", "plugins/", "dbt_project/", "expectations/", "governance.yml", "prompts/", "uv.lock"):
        assert part in copied, f"Dockerfile does not copy {part}"
    assert "uv export" in text and "--frozen" in text, "dependencies must come from uv.lock"
    assert "apache-airflow==${AIRFLOW_VERSION}" in text, "keep the image's Airflow"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".gmp" in ignored, ".env and local data stay out of the build context"
