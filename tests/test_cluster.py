"""The cluster definitions in cluster/ parse, pass the checks the installed Ray applies to them,
and keep what the project relies on: a CPU-only head, whole 8xH100 workers, no Ray port open to
the internet, token authentication, one Ray version everywhere, and a data fetch that runs once.

No cluster is started and nothing touches a cloud: the launcher configs go through Ray's offline
fill-defaults and schema validation, and the KubeRay manifests through the code the in-tree
autoscaler uses to turn a RayCluster into node types.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest
import ray
import yaml
from conftest import REPO_ROOT

CLUSTER_DIR = REPO_ROOT / "cluster"
LAUNCHER_CONFIGS = {"aws": CLUSTER_DIR / "aws.yaml", "gcp": CLUSTER_DIR / "gcp.yaml"}
RAYCLUSTER = CLUSTER_DIR / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER_DIR / "kuberay" / "rayjob.yaml"
DOCKERFILE = CLUSTER_DIR / "Dockerfile"
DOCKERIGNORE = CLUSTER_DIR / "Dockerfile.dockerignore"
FETCH_DATA = CLUSTER_DIR / "fetch_data.sh"
README = CLUSTER_DIR / "README.md"
FLAGSHIP_SWEEP = "sweeps/qat_vs_lawa.py"
# The README's walk-through must show each of these; their options are checked against the Ray CLI.
REQUIRED_README_COMMANDS = (
    "ray get-auth-token",
    "ray up",
    "ray dashboard",
    "ray job submit",
    "ray job logs",
    "ray down",
)

# GCS, dashboard / job API, Ray client: never reachable from the internet.
RAY_PUBLIC_PORTS = (6379, 8265, 10001)
# Command lists Ray's defaults.yaml fills in when a config leaves them out; the AWS and GCP
# defaults pip-install a nightly Ray wheel, so every one must be set explicitly.
LAUNCHER_COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)


def _load_yaml(path: Path) -> Dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path} must hold one YAML mapping"
    return document


def _prepared_launcher_config(path: Path) -> Dict[str, Any]:
    """The config as `ray up` sees it before any cloud call: defaults merged, commands merged."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(copy.deepcopy(_load_yaml(path)))


def _worker_types(config: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {
        name: node_type
        for name, node_type in config["available_node_types"].items()
        if name != config["head_node_type"]
    }


def _as_ray_cluster_cr(spec: Dict[str, Any], name: str) -> Dict[str, Any]:
    """A RayCluster object as the API server would hand it to the autoscaler."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name, "namespace": "default"},
        "spec": copy.deepcopy(spec),
    }


def _kuberay_cluster_specs() -> Iterator[Tuple[str, Dict[str, Any]]]:
    yield RAYCLUSTER.name, _load_yaml(RAYCLUSTER)["spec"]
    yield RAYJOB.name, _load_yaml(RAYJOB)["spec"]["rayClusterSpec"]


def _all_group_specs(spec: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    yield spec["headGroupSpec"]
    yield from spec["workerGroupSpecs"]


KUBERAY_SPECS = list(_kuberay_cluster_specs())


def _dockerfile_settings(path: Path = DOCKERFILE) -> Tuple[Dict[str, str], Dict[str, str], List[str]]:
    """(ARG defaults, ENV values with ${...} resolved, FROM lines) of a Dockerfile."""
    logical_lines = re.sub(r"\\\n", " ", path.read_text()).splitlines()
    args: Dict[str, str] = {}
    env: Dict[str, str] = {}
    froms: List[str] = []

    def resolve(value: str) -> str:
        def lookup(match: "re.Match[str]") -> str:
            name = match.group(1)
            return env.get(name, args.get(name, match.group(0)))

        return re.sub(r"\$\{(\w+)\}", lookup, value)

    for line in logical_lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and "=" in rest:
            name, _, default = rest.strip().partition("=")
            args.setdefault(name, default)
        elif instruction == "ENV":
            for assignment in shlex.split(rest):
                name, _, value = assignment.partition("=")
                env[name] = resolve(value)
        elif instruction == "FROM":
            froms.append(rest.strip())
    return args, env, froms


def _world_open_ray_ports(document: Any) -> List[str]:
    """Every ingress rule in `document` that admits a Ray port from any address.

    Understands AWS IpPermissions (as in provider.security_group) and GCE firewall rules
    (sourceRanges + allowed), wherever they appear in the document.
    """
    world_v4, world_v6 = "0.0.0.0/0", "::/0"
    found: List[str] = []

    def aws_rule_opens(rule: Dict[str, Any], port: int) -> bool:
        if str(rule.get("IpProtocol")) == "-1":
            return True
        return int(rule.get("FromPort", -1)) <= port <= int(rule.get("ToPort", -1))

    def gce_rule_opens(allowed: Dict[str, Any], port: int) -> bool:
        if allowed.get("IPProtocol") == "all" or "ports" not in allowed:
            return True
        for spec in allowed["ports"]:
            low, _, high = str(spec).partition("-")
            if int(low) <= port <= int(high or low):
                return True
        return False

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for rule in node.get("IpPermissions") or []:
                everyone = any(r.get("CidrIp") == world_v4 for r in rule.get("IpRanges", [])) or any(
                    r.get("CidrIpv6") == world_v6 for r in rule.get("Ipv6Ranges", [])
                )
                found.extend(
                    f"{where}.IpPermissions opens {port}"
                    for port in RAY_PUBLIC_PORTS
                    if everyone and aws_rule_opens(rule, port)
                )
            if {world_v4, world_v6} & set(node.get("sourceRanges") or []):
                for allowed in node.get("allowed") or []:
                    found.extend(
                        f"{where}.allowed opens {port}"
                        for port in RAY_PUBLIC_PORTS
                        if gce_rule_opens(allowed, port)
                    )
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")

    walk(document, "$")
    return found


def _ray_cli_options(words: List[str]) -> Tuple[str, Set[str]]:
    """(command path, every option string it accepts) for a `ray ...` command line."""
    import click
    from ray.scripts.scripts import cli

    command: click.Command = cli
    path = ["ray"]
    for word in words[1:]:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
        path.append(word)
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    return " ".join(path), options | {"--help"}


def _options_used(words: List[str]) -> List[str]:
    """The option words of a command line, up to the `--` that starts a job's entrypoint."""
    used = []
    for word in words:
        if word == "--":
            break
        if word.startswith("-") and word != "-":
            used.append(word.split("=", 1)[0])
    return used


def _shell_lines(text: str) -> Iterator[str]:
    """Lines of a shell snippet, continuation backslashes joined, comments dropped."""
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            yield line


def _ray_invocations(line: str) -> Iterator[List[str]]:
    """Every `ray ...` command in a shell line (after `;`, `&&` or env assignments)."""
    for part in re.split(r";|&&|\|\|", line):
        if not re.match(r"\s*([A-Za-z_]\w*=\S*\s+)*ray\s", part):
            continue  # another program (aws, kubectl, ...): nothing of Ray to check
        words = shlex.split(part.strip())
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words and words[0] == "ray":
            yield words


# --- every file parses ------------------------------------------------------------------------


def test_every_cluster_yaml_parses_to_one_mapping() -> None:
    paths = sorted(CLUSTER_DIR.rglob("*.yaml"))
    assert set(paths) == {*LAUNCHER_CONFIGS.values(), RAYCLUSTER, RAYJOB}, (
        "a YAML file in cluster/ has no checks in tests/test_cluster.py"
    )
    for path in paths:
        _load_yaml(path)


# --- Ray cluster launcher configs -------------------------------------------------------------


@pytest.mark.parametrize("cloud", sorted(LAUNCHER_CONFIGS))
def test_launcher_config_passes_ray_validation(cloud: str) -> None:
    pytest.importorskip("jsonschema", reason="Ray's config validation needs ray[default] (jsonschema)")
    from ray.autoscaler._private.util import validate_config

    config = _prepared_launcher_config(LAUNCHER_CONFIGS[cloud])
    validate_config(config)
    assert config["provider"]["type"] == cloud


@pytest.mark.parametrize("cloud", sorted(LAUNCHER_CONFIGS))
def test_launcher_config_sets_every_command_list_itself(cloud: str) -> None:
    raw = _load_yaml(LAUNCHER_CONFIGS[cloud])
    missing = [key for key in LAUNCHER_COMMAND_KEYS if key not in raw]
    assert not missing, f"{cloud}.yaml leaves {missing} to Ray's defaults, which install a nightly Ray"
    prepared = _prepared_launcher_config(LAUNCHER_CONFIGS[cloud])
    commands = [cmd for key in LAUNCHER_COMMAND_KEYS for cmd in prepared[key]]
    assert not [cmd for cmd in commands if "ray-wheels" in cmd or "pip install" in cmd]


@pytest.mark.parametrize("cloud", sorted(LAUNCHER_CONFIGS))
def test_launcher_head_is_cpu_only_and_workers_are_whole_8_gpu_nodes(cloud: str) -> None:
    config = _prepared_launcher_config(LAUNCHER_CONFIGS[cloud])
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    assert head["max_workers"] == 0

    workers = _worker_types(config)
    assert len(workers) == 1, "one worker type: a whole 8xH100 machine"
    (worker,) = workers.values()
    assert worker["resources"]["GPU"] == 8
    # Cores for the trial (at least 8 per rank's data loading) plus room for Ray itself.
    assert worker["resources"]["CPU"] >= 64
    assert worker["min_workers"] == 0, "GPU nodes exist only while trials need them"
    assert 1 <= worker["max_workers"] <= config["max_workers"]
    assert config["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("cloud", sorted(LAUNCHER_CONFIGS))
def test_launcher_config_opens_no_ray_port_to_the_internet(cloud: str) -> None:
    raw = _load_yaml(LAUNCHER_CONFIGS[cloud])
    assert _world_open_ray_ports(raw) == []
    # The dashboard listens on the head's loopback only; `ray dashboard` tunnels to 8265 there.
    (head_start,) = [cmd for cmd in raw["head_start_ray_commands"] if "ray start" in cmd]
    words = shlex.split(head_start.replace(";", " ; "))
    assert "--dashboard-host=127.0.0.1" in words
    assert not [w for w in words if w.startswith("--dashboard-port")]


def test_open_port_check_recognises_world_open_rules() -> None:
    world, private = [{"CidrIp": "0.0.0.0/0"}], [{"CidrIp": "10.0.0.0/8"}]
    open_aws = {
        "provider": {
            "security_group": {
                "IpPermissions": [
                    {"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 9000, "IpRanges": world},
                    {"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "IpRanges": private},
                    {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
                ]
            }
        }
    }
    assert sorted(_world_open_ray_ports(open_aws)) == sorted(
        [
            "$.provider.security_group.IpPermissions opens 8265",
            "$.provider.security_group.IpPermissions opens 6379",
            "$.provider.security_group.IpPermissions opens 8265",
            "$.provider.security_group.IpPermissions opens 10001",
        ]
    )
    ssh_and_client = [{"IPProtocol": "tcp", "ports": ["22", "10000-10002"]}]
    open_gce = {"rule": {"sourceRanges": ["0.0.0.0/0"], "allowed": ssh_and_client}}
    assert _world_open_ray_ports(open_gce) == ["$.rule.allowed opens 10001"]
    ssh_only = {"sourceRanges": ["0.0.0.0/0"], "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}]}
    assert _world_open_ray_ports(ssh_only) == []


@pytest.mark.parametrize("cloud", sorted(LAUNCHER_CONFIGS))
def test_launcher_nodes_start_ray_with_real_flags_and_token_auth(cloud: str) -> None:
    raw = _load_yaml(LAUNCHER_CONFIGS[cloud])
    starts = 0
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in raw[key]:
            for line in _shell_lines(command):
                for words in _ray_invocations(line):
                    path, options = _ray_cli_options(words)
                    unknown = [o for o in _options_used(words) if o not in options]
                    assert not unknown, f"{cloud}.yaml {key}: `{path}` has no option {unknown}"
                    starts += path == "ray start"
    assert starts == 2, "one `ray start` for the head, one for the workers"
    # Every process in every node's container runs with token auth on, and the container holds
    # the laptop's token at the path Ray reads by default.
    assert "--env RAY_AUTH_MODE=token" in raw["docker"]["run_options"]
    assert raw["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}


@pytest.mark.parametrize("cloud", sorted(LAUNCHER_CONFIGS))
def test_launcher_workers_fetch_the_data_with_the_script_in_the_image(cloud: str) -> None:
    _, env, _ = _dockerfile_settings()
    script_in_image = f"{env['GOLF_HOME']}/{FETCH_DATA.relative_to(REPO_ROOT).as_posix()}"
    raw = _load_yaml(LAUNCHER_CONFIGS[cloud])
    assert raw["worker_setup_commands"] == [f"bash {script_in_image} --train-shards 80"]
    assert raw["head_setup_commands"] == [], "the head trains nothing and needs no data"


def test_aws_config_stays_in_its_region() -> None:
    provider = _load_yaml(LAUNCHER_CONFIGS["aws"])["provider"]
    zones = provider["availability_zone"].split(",")
    assert all(zone.startswith(provider["region"]) for zone in zones), zones


def test_gcp_config_keeps_disks_and_zone_together() -> None:
    config = _load_yaml(LAUNCHER_CONFIGS["gcp"])
    zone = config["provider"]["availability_zone"]
    assert zone.startswith(config["provider"]["region"])
    for name, node_type in config["available_node_types"].items():
        for disk in node_type["node_config"]["disks"]:
            disk_type = disk["initializeParams"].get("diskType")
            if disk_type:
                assert disk_type.startswith(f"zones/{zone}/"), f"{name}: disk in another zone than {zone}"
    (worker,) = _worker_types(config).values()
    assert worker["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert "guestAccelerators" not in worker["node_config"], "a3-highgpu-8g has its GPUs built in"


# --- KubeRay manifests ------------------------------------------------------------------------


def test_kuberay_manifests_have_the_fields_kuberay_requires() -> None:
    cluster = _load_yaml(RAYCLUSTER)
    job = _load_yaml(RAYJOB)
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert cluster["metadata"]["name"] and job["metadata"]["name"]
    for source, spec in _kuberay_cluster_specs():
        assert spec["rayVersion"] == ray.__version__, f"{source}: rayVersion differs from the installed Ray"
        assert spec["headGroupSpec"]["template"]["spec"]["containers"], source
        for group in spec["workerGroupSpecs"]:
            for field in ("groupName", "template", "minReplicas", "maxReplicas"):
                assert field in group, f"{source}: worker group lacks {field}"
            assert 0 <= group["minReplicas"] <= group["maxReplicas"]
        for group in _all_group_specs(spec):
            params = group.get("rayStartParams", {})
            assert all(isinstance(v, str) for v in params.values()), f"{source}: rayStartParams take strings"


@pytest.mark.parametrize("source,spec", KUBERAY_SPECS, ids=[source for source, _ in KUBERAY_SPECS])
def test_kuberay_autoscaler_sees_a_gpu0_head_and_gpu8_workers(source: str, spec: Dict[str, Any]) -> None:
    pytest.importorskip("jsonschema", reason="Ray's config validation needs ray[default] (jsonschema)")
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    # The autoscaler's own translation of the CR; it ends with Ray's validate_config.
    config = _derive_autoscaling_config_from_ray_cr(_as_ray_cluster_cr(spec, "golf-sweeps"))
    node_types = config["available_node_types"]
    assert node_types[config["head_node_type"]]["resources"]["GPU"] == 0
    worker = node_types["h100x8"]
    assert worker["resources"]["GPU"] == 8
    assert worker["resources"]["CPU"] >= 64
    assert worker["min_workers"] == 0
    assert worker["max_workers"] == spec["workerGroupSpecs"][0]["maxReplicas"]
    assert spec["enableInTreeAutoscaling"] is True
    assert config["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("source,spec", KUBERAY_SPECS, ids=[source for source, _ in KUBERAY_SPECS])
def test_kuberay_gpu_workers_fill_an_h100_node_with_shared_memory(
    source: str, spec: Dict[str, Any]
) -> None:
    (group,) = spec["workerGroupSpecs"]
    assert group["groupName"] == "h100x8"
    pod = group["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert pod["nodeSelector"], "GPU pods must be pinned to H100 nodes"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]

    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (shm_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    assert volumes[shm_mount["name"]]["emptyDir"]["medium"] == "Memory"

    head = spec["headGroupSpec"]
    head_container = head["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container["resources"].get("limits", {})
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert "tolerations" not in head["template"]["spec"], "the head must not be placed on GPU nodes"


@pytest.mark.parametrize("source,spec", KUBERAY_SPECS, ids=[source for source, _ in KUBERAY_SPECS])
def test_kuberay_head_is_reachable_only_inside_the_cluster(source: str, spec: Dict[str, Any]) -> None:
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    for group in _all_group_specs(spec):
        for container in group["template"]["spec"]["containers"]:
            host_ports = [p for p in container.get("ports", []) if "hostPort" in p]
            assert not host_ports, f"{source}: a hostPort exposes a port of the node"
    assert spec["authOptions"]["mode"] == "token"


def test_rayjob_runs_the_flagship_sweep_on_the_raycluster_shape() -> None:
    job = _load_yaml(RAYJOB)["spec"]
    assert job["rayClusterSpec"] == _load_yaml(RAYCLUSTER)["spec"], (
        "rayjob.yaml's rayClusterSpec drifted from raycluster.yaml's spec"
    )
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["activeDeadlineSeconds"] > 0
    # A local working_dir is uploaded by the submitter pod from the image: K8sJobMode only.
    assert job["submissionMode"] == "K8sJobMode"
    _, env, _ = _dockerfile_settings()
    assert yaml.safe_load(job["runtimeEnvYAML"])["working_dir"] == env["GOLF_HOME"]

    words = shlex.split(job["entrypoint"])
    assert words[:2] == ["python", FLAGSHIP_SWEEP]
    assert words[words.index("--scale") + 1] == "full"
    storage = words[words.index("--storage") + 1]
    assert re.match(r"(s3|gs)://", storage), "trials on many nodes need shared storage"
    assert (REPO_ROOT / FLAGSHIP_SWEEP).is_file(), f"the RayJob runs {FLAGSHIP_SWEEP}, which the repository lacks"


# --- one image, one Ray version ---------------------------------------------------------------


def test_dockerfile_pins_the_installed_ray_version() -> None:
    args, _, froms = _dockerfile_settings()
    assert args["RAY_VERSION"] == ray.__version__, (
        f"cluster/Dockerfile builds on Ray {args['RAY_VERSION']} but Ray {ray.__version__} is installed: "
        "update ARG RAY_VERSION (and the image tags in cluster/*.yaml) together with the Ray pin"
    )
    assert froms == ["rayproject/ray:${RAY_VERSION}-${RAY_IMAGE_SUFFIX}"]
    suffix = re.fullmatch(r"py(\d)(\d+)-cu(12\d)", args["RAY_IMAGE_SUFFIX"])
    assert suffix, "a CUDA 12 Ray image (py3XY-cu12Z)"
    assert tuple(int(g) for g in suffix.groups()[:2]) == (3, 11)
    # torch comes from the index of the same CUDA line as the base image.
    assert args["TORCH_INDEX_URL"].rstrip("/").endswith(f"/cu{suffix.group(3)}")


def test_every_image_reference_is_the_project_image_of_this_ray_version() -> None:
    args, _, _ = _dockerfile_settings()
    expected_tag = f"{args['RAY_VERSION']}-{args['RAY_IMAGE_SUFFIX']}"
    images = [_load_yaml(path)["docker"]["image"] for path in LAUNCHER_CONFIGS.values()]
    for _, spec in _kuberay_cluster_specs():
        for group in _all_group_specs(spec):
            pod = group["template"]["spec"]
            images += [c["image"] for c in pod.get("initContainers", []) + pod["containers"]]
    assert len(set(images)) == 1, f"the definitions use different images: {sorted(set(images))}"
    assert images[0].endswith(f"/golf-sweeps:{expected_tag}")


def test_image_environment_matches_the_fetched_data_layout(tmp_path: Path) -> None:
    _, env, _ = _dockerfile_settings()
    root = env["GOLF_DATA_ROOT"]
    assert env["DATA_PATH"] == f"{root}/datasets/fineweb10B_sp1024"
    assert env["TOKENIZER_PATH"] == f"{root}/tokenizers/fineweb_1024_bpe.model"
    # ...which is where fetch_data.sh reports the data it fetched.
    result = _FetchData(tmp_path).run("--train-shards", "1")
    assert f"DATA_PATH={tmp_path / 'data'}/datasets/fineweb10B_sp1024 " in result.stdout
    assert f"TOKENIZER_PATH={tmp_path / 'data'}/tokenizers/fineweb_1024_bpe.model" in result.stdout


def test_image_data_paths_are_the_sweep_service_defaults() -> None:
    # A sweep submitted with no DATA_PATH/TOKENIZER_PATH of its own reads the image's data.
    from sweeps import spec

    _, env, _ = _dockerfile_settings()
    assert (env["DATA_PATH"], env["TOKENIZER_PATH"]) == (spec.DEFAULT_DATA_PATH, spec.DEFAULT_TOKENIZER_PATH)


def test_image_build_context_leaves_out_what_git_ignores() -> None:
    def patterns(path: Path) -> set:
        lines = (line.strip() for line in path.read_text().splitlines())
        # `/data/` in .gitignore and `data` in .dockerignore both mean the top-level folder only.
        kept = (line for line in lines if line and not line.startswith("#"))
        return {re.sub(r"^(\*\*/|/)", "", line).rstrip("/") for line in kept}

    ignored_by_docker = patterns(DOCKERIGNORE)
    must_stay_out = patterns(REPO_ROOT / ".gitignore") | {".git"}
    missing = sorted(must_stay_out - ignored_by_docker)
    assert not missing, f"add to {DOCKERIGNORE.name}: {missing}"


def test_no_definition_turns_off_process_group_cleanup() -> None:
    # Stopping a trial relies on Ray 2.60's per-worker process-group cleanup being on.
    pattern = re.compile(r"RAY_process_group_cleanup_enabled\W{1,3}(0|false)", re.IGNORECASE)
    for path in sorted(CLUSTER_DIR.rglob("*")):
        if path.is_file():
            assert not pattern.search(path.read_text()), f"{path} disables process-group cleanup"


# --- the README's commands exist --------------------------------------------------------------


def test_readme_ray_commands_use_only_real_options() -> None:
    text = README.read_text()
    snippets = re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S)
    snippets += re.findall(r"`(ray [^`\n]+)`", text)
    checked = set()
    for snippet in snippets:
        for line in _shell_lines(snippet):
            for words in _ray_invocations(line):
                path, options = _ray_cli_options(words)
                unknown = [o for o in _options_used(words) if o not in options]
                assert not unknown, f"README: `{path}` has no option {unknown} ({line})"
                checked.add(path)
    for command in REQUIRED_README_COMMANDS:
        assert command in checked, f"README shows no `{command}` command"


def test_commands_in_the_definitions_headers_use_only_real_options() -> None:
    for path in sorted(CLUSTER_DIR.rglob("*.yaml")):
        lines = [line.strip() for line in path.read_text().splitlines()]
        comments = "\n".join(line[1:].strip() for line in lines if line.startswith("#"))
        for line in _shell_lines(comments):
            if not line.startswith(("ray ", "RAY_")):
                continue  # prose that mentions a command in passing
            for words in _ray_invocations(line):
                command, options = _ray_cli_options(words)
                unknown = [o for o in _options_used(words) if o not in options]
                assert not unknown, f"{path.name}: `{command}` has no option {unknown} ({line})"


def test_every_placeholder_is_explained_in_the_readme() -> None:
    readme = README.read_text()
    placeholders = set()
    for path in sorted(CLUSTER_DIR.rglob("*.yaml")):
        placeholders |= set(re.findall(r"REPLACE_WITH_[A-Z_]+", path.read_text()))
    assert placeholders, "the definitions name the values a user must fill in"
    assert not [p for p in placeholders if f"`{p}`" not in readme]


# --- fetch_data.sh ----------------------------------------------------------------------------

_FAKE_GOLF = r"""#!/usr/bin/env bash
# Stands in for `golf data fineweb`: records its arguments, writes the challenge's layout.
set -euo pipefail
echo "$*" >> "$FAKE_GOLF_CALLS"
[[ "$1 $2" == "data fineweb" ]] || exit 64
shift 2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --variant) variant="$2" ;;
    --train-shards) shards="$2" ;;
    --out) out="$2" ;;
  esac
  shift 2
done
sleep "${FAKE_GOLF_SLEEP:-0}"
dataset="$out/datasets/fineweb10B_$variant"
mkdir -p "$dataset" "$out/tokenizers"
for ((i = 0; i < ${FAKE_GOLF_WRITES:-$shards}; i++)); do
  printf 'shard' > "$dataset/$(printf 'fineweb_train_%06d.bin' "$i")"
done
printf 'shard' > "$dataset/fineweb_val_000000.bin"
printf 'model' > "$out/tokenizers/fineweb_1024_bpe.model"
"""


class _FetchData:
    """Runs cluster/fetch_data.sh against a fake `golf` in a temporary folder."""

    def __init__(self, tmp_path: Path, *, with_golf: bool = True) -> None:
        for tool in ("bash", "flock"):
            if shutil.which(tool) is None:
                pytest.skip(f"fetch_data.sh needs `{tool}`, which this machine lacks")
        self.root = tmp_path / "data"
        self.calls = tmp_path / "golf-calls.txt"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        if with_golf:
            fake = bin_dir / "golf"
            fake.write_text(_FAKE_GOLF)
            fake.chmod(0o755)
        # Only system tools besides the fake: the real `golf` of a developer's venv stays out.
        system_dirs = {str(Path(shutil.which(t)).parent) for t in ("bash", "flock", "mkdir", "touch")}
        self.env = {
            "PATH": os.pathsep.join([str(bin_dir), *sorted(system_dirs)]),
            "FAKE_GOLF_CALLS": str(self.calls),
            "GOLF_DATA_ROOT": str(self.root),
        }

    def start(self, *args: str, **env: str) -> "subprocess.Popen[str]":
        return subprocess.Popen(
            ["bash", str(FETCH_DATA), *args],
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, expect_ok: bool = True, **env: str) -> "subprocess.CompletedProcess[str]":
        process = self.start(*args, **env)
        stdout, stderr = process.communicate(timeout=60)
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        if expect_ok:
            assert result.returncode == 0, result.stderr
        return result

    def golf_calls(self) -> List[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def train_shards(self) -> int:
        return len(list((self.root / "datasets" / "fineweb10B_sp1024").glob("fineweb_train_*.bin")))


def test_fetch_data_downloads_once_and_then_returns_at_once(tmp_path: Path) -> None:
    fetch = _FetchData(tmp_path)
    first = fetch.run("--train-shards", "3")
    assert fetch.golf_calls() == [f"data fineweb --variant sp1024 --train-shards 3 --out {fetch.root}"]
    assert fetch.train_shards() == 3
    assert "ready:" in first.stdout

    again = fetch.run("--train-shards", "3")
    fewer = fetch.run("--train-shards", "2")
    assert len(fetch.golf_calls()) == 1, "a completed fetch of enough shards is not repeated"
    assert "nothing to do" in again.stdout and "nothing to do" in fewer.stdout

    fetch.run("--train-shards", "5")
    assert len(fetch.golf_calls()) == 2, "asking for more shards than fetched so far fetches again"
    assert fetch.train_shards() == 5


def test_fetch_data_runs_one_download_for_concurrent_callers(tmp_path: Path) -> None:
    fetch = _FetchData(tmp_path)
    # The fake download lasts a second, so without the lock both callers would start one.
    callers = [fetch.start("--train-shards", "2", FAKE_GOLF_SLEEP="1") for _ in range(2)]
    for caller in callers:
        _, stderr = caller.communicate(timeout=60)
        assert caller.returncode == 0, stderr
    assert len(fetch.golf_calls()) == 1


def test_fetch_data_rejects_an_incomplete_download_and_retries_it(tmp_path: Path) -> None:
    fetch = _FetchData(tmp_path)
    short = fetch.run("--train-shards", "3", expect_ok=False, FAKE_GOLF_WRITES="1")
    assert short.returncode != 0
    assert "expected >= 3 train shards" in short.stderr and "found 1" in short.stderr
    assert not list(fetch.root.glob(".complete-*")), "no completion marker for a partial download"

    fetch.run("--train-shards", "3")
    assert len(fetch.golf_calls()) == 2 and fetch.train_shards() == 3


@pytest.mark.parametrize(
    "args,message",
    [
        (["--train-shards", "0"], "--train-shards must be a whole number"),
        (["--train-shards", "many"], "--train-shards must be a whole number"),
        (["--shards", "3"], "unknown argument '--shards'"),
        (["--root"], "--root needs a directory"),
    ],
)
def test_fetch_data_explains_bad_arguments(tmp_path: Path, args: List[str], message: str) -> None:
    fetch = _FetchData(tmp_path)
    result = fetch.run(*args, expect_ok=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert fetch.golf_calls() == []


def test_fetch_data_explains_a_missing_golf_command(tmp_path: Path) -> None:
    fetch = _FetchData(tmp_path, with_golf=False)
    result = fetch.run("--train-shards", "1", expect_ok=False)
    assert result.returncode != 0
    assert "'golf' command is not on PATH" in result.stderr


def test_fetch_data_explains_an_unwritable_root(tmp_path: Path) -> None:
    fetch = _FetchData(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = fetch.run("--root", str(blocker / "data"), expect_ok=False)
    assert result.returncode != 0
    assert f"cannot write to {blocker / 'data'}" in result.stderr
