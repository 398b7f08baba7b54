"""deploy/: the image recipe, compose stack, Kubernetes manifests, dashboard and alert rules hold
together (schemas where a validator runs offline, promtool for the rules)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from echogate.metrics import Metrics
from echogate.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/run does)")


def k8s_docs() -> dict[str, dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_dockerfile_is_multi_stage_non_root_and_exec_form():
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2
    final = text[text.rindex("\nFROM "):]
    user = re.search(r"^USER\s+(\S+)", final, re.M)
    assert user and user.group(1).split(":")[0] not in ("root", "0")
    entry = re.search(r"^ENTRYPOINT\s+(.+)$", final, re.M)
    assert entry and json.loads(entry.group(1))[0] == "echogate"  # exec form: a JSON array
    assert set(re.search(r"^EXPOSE\s+(.+)$", final, re.M).group(1).split()) == {"50051", "9464"}
    assert "COPY --from=build" in final and "ECHOGATE_HOST=0.0.0.0" in final
    for path in re.findall(r"^COPY\s+(?!--)(.+?)\s+/src/?\S*$", text, re.M):
        for part in path.split():
            assert (ROOT / part).exists(), part


def test_the_image_ships_the_model_with_the_package():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"models/*.onnx"' in pyproject
    assert (ROOT / "service" / "echogate" / "models" / "bot_origin.onnx").is_file()


def test_compose_stack_mounts_files_that_exist_and_wires_the_store():
    compose_file = DEPLOY / "compose" / "docker-compose.yml"
    compose = yaml.safe_load(compose_file.read_text())
    services = compose["services"]
    assert set(services) >= {"echogate", "prometheus", "grafana", "postgres"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (compose_file.parent / source).exists(), f"{name}: {source}"
    echogate = services["echogate"]
    assert echogate["environment"]["ECHOGATE_STORE__URL"].startswith("postgresql://")
    assert "@postgres:5432/" in echogate["environment"]["ECHOGATE_STORE__URL"]
    assert (compose_file.parent / echogate["build"]["context"] / echogate["build"]["dockerfile"]).is_file()
    assert echogate["depends_on"]["postgres"]["condition"] == "service_healthy"
    Settings.load(compose_file.parent / "echogate.yaml")  # the settings file validates
    grafana_mounts = " ".join(services["grafana"]["volumes"])
    assert "grafana/provisioning" in grafana_mounts and "grafana/dashboards" in grafana_mounts


def test_kubernetes_manifests_validate_against_the_api_schemas():
    for name in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            kubernetes_validate.validate(doc, "1.30", strict=True)


def test_kubernetes_deployment_probes_service_hpa_and_budget_fit_together(tmp_path):
    docs = k8s_docs()
    deployment, service, hpa, pdb, config = (docs[k] for k in (
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["clusterIP"] == "None"  # headless: clients balance over pods

    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051, probe
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True

    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert all(m["type"] != "Resource" for m in hpa["spec"]["metrics"])  # saturation, not CPU
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"] <= hpa["spec"]["minReplicas"]

    mounted = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert mounted["config"]["configMap"]["name"] == config["metadata"]["name"]
    settings_file = tmp_path / "echogate.yaml"
    settings_file.write_text(config["data"]["echogate.yaml"])
    settings = Settings.load(settings_file)  # the ConfigMap's settings validate
    assert settings.max_connection_age_seconds > 0 and settings.policy.version == "k8s-1"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.grace_seconds


def test_dashboard_has_a_stable_uid_a_datasource_variable_and_every_row():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "echogate.json").read_text())
    assert dashboard["uid"] == "echogate-overview"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    rows = {p["title"] for p in dashboard["panels"] if p["type"] == "row"}
    assert rows >= {"Traffic", "Errors", "Latency", "Saturation", "Decisions", "Scores", "Collapse watch", "Store"}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "echogate.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_alert_has_a_summary_description_and_a_runbook_section():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "echogate.yml").read_text())
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {"#" + re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
               for h in re.findall(r"^## (.+)$", runbook, re.M)}
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 9
    for alert in alerts:
        notes = alert["annotations"]
        assert notes["summary"] and notes["description"], alert["alert"]
        assert notes["runbook_url"].startswith("docs/runbook.md#")
        assert notes["runbook_url"].removeprefix("docs/runbook.md") in anchors, alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning")


@needs_promtool
def test_alert_rules_pass_promtool_check_and_unit_tests():
    rules = DEPLOY / "prometheus" / "rules" / "echogate.yml"
    check = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(["promtool", "test", "rules", str(DEPLOY / "prometheus" / "tests" / "echogate_test.yml")],
                           capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_the_metric_catalogue_lists_every_exported_metric():
    catalogue = (ROOT / "docs" / "metrics.md").read_text()
    metrics = Metrics()
    names = []
    for family in metrics.registry.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        names.append(family.name + suffix)
    assert len(names) >= 25
    missing = [n for n in names if f"`{n}`" not in catalogue]
    assert not missing, f"not in docs/metrics.md: {missing}"


@pytest.mark.slow
def test_the_image_build_stage_installs_and_finds_its_model(tmp_path):
    """No Docker daemon runs here, so the build stage's own steps run in a fresh virtualenv: copy
    what the Dockerfile copies, `pip install` it, and run the Dockerfile's check command."""
    import sys

    text = (DEPLOY / "Dockerfile").read_text()
    stages = [m.start() for m in re.finditer(r"^FROM ", text, re.M)]
    build = text[stages[0]:stages[1]]
    src = tmp_path / "src"
    src.mkdir()
    for line in re.findall(r"^COPY\s+(?!--)(.+)$", build, re.M):
        *sources, dest = line.split()
        target = src / Path(dest).relative_to("/src")
        for part in sources:
            path = ROOT / part
            destination = target / path.name if dest.endswith("/") else target
            (shutil.copytree if path.is_dir() else shutil.copy)(path, destination)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(src)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    check = re.search(r'python -c "(.+?)"', build).group(1)
    result = subprocess.run([str(venv / "bin" / "python"), "-c", check], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (venv / "bin" / "echogate").exists()


def test_the_service_serves_on_its_runtime_dependencies_alone(tmp_path):
    """`make run` and the image install the package without extras: the server starts, and
    scores and explains a transcript, with every package only the extras bring made unimportable."""
    import sys
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda requirement: re.split(r"[<>=\[ ]", requirement)[0]  # noqa: E731
    runtime = {name(r) for r in project["dependencies"]}
    modules = {"scikit-learn": "sklearn", "grpcio-tools": "grpc_tools"}
    extras = {modules.get(n, n.replace("-", "_")) for reqs in project["optional-dependencies"].values()
              for n in map(name, reqs) if n not in runtime}
    assert {"onnx", "sklearn"} <= extras
    script = f"""
import asyncio, importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in {sorted(extras)!r}:
            raise ModuleNotFoundError(f"{{fullname}} is not a runtime dependency")
sys.meta_path.insert(0, Refuse())
from echogate.grpc_api.server import EchogateServer
from echogate.settings import Settings
from echogate.types import Role, Transcript, Turn
async def main():
    settings = Settings(host="127.0.0.1", port=0, metrics_port=0, store={{"url": {str(tmp_path / "s.db")!r}}})
    async with EchogateServer(settings) as server:
        [verdict] = await server.core.score([Transcript("t", "s", (Turn(Role.AGENT,
            "Thank you for reaching out! I'd be happy to help you with your refund request today."),))])
    print(verdict.reasons[0])
asyncio.run(main())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "machine-like wording" in result.stdout
