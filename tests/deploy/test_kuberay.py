"""deploy/kuberay read the way the first operator runs it: every name that must meet another one does.

No Kubernetes here. These tests parse dojo.yaml, the Dockerfile and the README, and hold them
against each other and against what dojo's code reads: secrets referenced vs created, DOJO_* names
vs the settings, the ports dojo listens on vs the ones the head exposes, the state directory vs the
volume, the resources job types ask for vs what the worker groups offer, the images vs the
Dockerfile. The head's start script runs for real, with stand-ins for `ray` and `dojo`.

Opt-in:
- DOJO_KUBERAY_CRDS=path[:path...]: validate the RayCluster against KubeRay's CRD files
  (ray-operator/config/crd/bases/ray.io_rayclusters.yaml of each version to support).
- DOJO_TEST_IMAGE_ENV=1: build the CPU image's Python environment from the Dockerfile's own
  `pip install` line in a fresh venv and import every job type (minutes; pip's cache helps).
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"
MANIFEST = KUBERAY / "dojo.yaml"
DOCKERFILE = KUBERAY / "Dockerfile"
README = KUBERAY / "README.md"
CODE_DIRS = ("actors", "serve", "pipelines")
# KubeRay >= 1.5.1 names the token Secret after the cluster (or authOptions.secretName, >= 1.6)
# and reads this key; it injects these variables itself.
RAY_TOKEN_KEY = "auth_token"
RAY_AUTH_VARS = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}


# ---------------------------------------------------------------- reading the files

def documents() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def one(kind: str) -> dict:
    found = [doc for doc in documents() if doc.get("kind") == kind]
    assert len(found) == 1, f"dojo.yaml should hold one {kind}, found {len(found)}"
    return found[0]


def cluster() -> dict:
    return one("RayCluster")


def groups() -> dict[str, dict]:
    """Every node group by name ('head' for the head): its spec with rayStartParams and template."""
    spec = cluster()["spec"]
    found = {"head": spec["headGroupSpec"]}
    for group in spec.get("workerGroupSpecs", []):
        found[group["groupName"]] = group
    return found


def ray_container(group: dict) -> dict:
    # KubeRay treats the first container as the Ray container.
    return group["template"]["spec"]["containers"][0]


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def readme_commands() -> list[str]:
    """Shell lines of the README's ```sh blocks, with the README's own REGISTRY= value put in."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    lines = [line for line in lines if line]
    registry = next((line.split("=", 1)[1].split()[0] for line in lines if line.startswith("REGISTRY=")), None)
    if registry:
        lines = [line.replace("$REGISTRY", registry) for line in lines]
    return lines


def readme_secrets() -> dict[str, set[str]]:
    """`kubectl create secret generic NAME --from-literal=KEY=...` in the README: NAME -> keys."""
    created: dict[str, set[str]] = {}
    for line in readme_commands():
        if line.startswith("kubectl create secret generic "):
            words = shlex.split(line)
            keys = {word.split("=", 2)[1] for word in words if word.startswith("--from-literal=")}
            created.setdefault(words[4], set()).update(keys)
    return created


@functools.cache
def code_env_names() -> frozenset[str]:
    """DOJO_* names dojo's code uses as string constants (what it reads; docstrings do not count)."""
    names: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and re.fullmatch(r"DOJO_[A-Z0-9_]+", node.value):
                    names.add(node.value)
    return frozenset(names)


def literal_kwargs(call: ast.Call) -> dict:
    out = {}
    for keyword in call.keywords:
        try:
            out[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            out[keyword.arg] = None  # computed: not checked
    return out


@functools.cache
def requested_shapes() -> tuple[tuple[str, float, float, dict], ...]:
    """(where, num_cpus, num_gpus, custom) of every `@job(...)` / `job(...)` and `Resources(...)` in pipelines/."""
    shapes = []
    for path in sorted((ROOT / "pipelines").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "job" and node.args:
                kw = literal_kwargs(node)
            elif name == "Resources":
                kw = dict(zip(("num_cpus", "num_gpus"), (ast.literal_eval(a) for a in node.args)))
                kw.update(literal_kwargs(node))
            else:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            shapes.append((where, kw.get("num_cpus", 1.0), kw.get("num_gpus", 0.0), kw.get("resources") or {}))
    return tuple(shapes)


def job_modules() -> list[str]:
    """Modules of pipelines/ that define a job type (a `job(...)` call)."""
    found = set()
    for path in sorted((ROOT / "pipelines").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "job" and node.args:
                found.add(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"))
    return sorted(found)


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))


def pyproject() -> str:
    return (ROOT / "pyproject.toml").read_text()


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', pyproject(), re.M).group(1)


def ray_pin() -> str:
    return re.search(r'"ray\[serve\]==([^"]+)"', pyproject()).group(1)


# ---------------------------------------------------------------- Ray token auth

def test_ray_token_goes_through_kuberay_auth_options():
    """The operator itself must hold the token (its dashboard calls get 401 otherwise)."""
    auth = cluster()["spec"].get("authOptions")
    assert auth is not None, "spec.authOptions is missing: KubeRay >= 1.5.1 only hands the token to " \
                             "the operator, the autoscaler and init containers through it"
    assert auth.get("mode") == "token"
    # KubeRay refuses token mode below Ray 2.52.0 (and without a rayVersion).
    ray_version = tuple(int(part) for part in cluster()["spec"]["rayVersion"].split("."))
    assert ray_version >= (2, 52, 0)
    # secretName exists from KubeRay 1.6 on; 1.5.x refuses it, so it stays out.
    assert "secretName" not in auth, "authOptions.secretName needs KubeRay >= 1.6; the README says 1.5.1"


def test_no_container_sets_the_ray_token_itself():
    """KubeRay 1.5 appends RAY_AUTH_* without looking: a second definition is a duplicate env var."""
    spec = cluster()["spec"]
    lists = {"autoscalerOptions.env": spec.get("autoscalerOptions", {}).get("env", [])}
    for name, group in groups().items():
        for container in group["template"]["spec"]["containers"] + group["template"]["spec"].get("initContainers", []):
            lists[f"{name}/{container['name']}"] = container.get("env", [])
    for where, env in lists.items():
        assert not RAY_AUTH_VARS & {item["name"] for item in env}, f"{where} sets {RAY_AUTH_VARS}; KubeRay does"


def test_readme_creates_the_ray_token_secret_kuberay_reads():
    created = readme_secrets()
    name = cluster()["metadata"]["name"]
    assert name in created, f"README should show `kubectl create secret generic {name} --from-literal={RAY_TOKEN_KEY}=...`"
    assert created[name] == {RAY_TOKEN_KEY}
    # ... and reads it back from the same place for `ray job submit`.
    assert any(f"secret {name} " in line and RAY_TOKEN_KEY in line for line in readme_commands())


# ---------------------------------------------------------------- secrets and settings

def test_every_secret_the_manifest_reads_is_created_in_the_readme_with_those_keys():
    created = readme_secrets()
    referenced: dict[str, set[str]] = {}
    for name, group in groups().items():
        for container in group["template"]["spec"]["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.setdefault(ref["name"], set()).add(ref["key"])
                    # Optional: the first apply works before anyone has created it.
                    assert ref.get("optional") is True, f"{name}: {item['name']} needs secret {ref['name']} to start"
    assert referenced, "the manifest reads no secret at all (S3 / Helix credentials)"
    for secret, keys in referenced.items():
        assert secret in created, f"secret {secret!r} is referenced but the README never creates it"
        assert keys == created[secret], f"secret {secret!r}: manifest reads {sorted(keys)}, README creates {sorted(created[secret])}"


def test_dojo_variables_in_the_manifest_are_ones_dojo_reads():
    known = code_env_names()
    assert {"DOJO_STATE_DIR", "DOJO_HOST", "DOJO_PORT", "DOJO_S3_BUCKET"} <= known, "the scan of the code found too little"
    for name, group in groups().items():
        for container in group["template"]["spec"]["containers"]:
            for variable in env_of(container):
                if variable.startswith("DOJO_"):
                    assert variable in known, f"{name}: {variable} is set but no code in {CODE_DIRS} reads it"


def test_s3_settings_are_all_offered_to_the_head():
    """Production storage: every DOJO_S3_* the storage code reads can come from the Secret."""
    s3 = {name for name in code_env_names() if name.startswith("DOJO_S3_")}
    head_env = env_of(ray_container(groups()["head"]))
    assert s3 <= set(head_env), f"the head cannot be given {sorted(s3 - set(head_env))}"


# ---------------------------------------------------------------- ports

def test_the_head_exposes_the_ports_dojo_and_ray_listen_on():
    head = groups()["head"]
    container = ray_container(head)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = env_of(container)
    params = head.get("rayStartParams", {})
    assert env.get("DOJO_HOST", {}).get("value") == "0.0.0.0", \
        "dojo listens on 127.0.0.1 unless DOJO_HOST says otherwise: the service would reach nothing"
    assert ports.get("serve") == int(env.get("DOJO_PORT", {}).get("value", 8000)), "the API's port is not exposed"
    assert ports.get("gcs-server") == int(params.get("port", 6379))
    assert ports.get("dashboard") == int(params.get("dashboard-port", 8265))
    assert params.get("dashboard-host", "0.0.0.0") == "0.0.0.0"
    assert cluster()["metadata"]["name"] == "dojo" and any(
        "svc/dojo-head-svc 8000:8000" in line for line in readme_commands()), "README's port-forward misses the API"


# ---------------------------------------------------------------- state and storage

def test_the_state_dir_is_on_the_claimed_volume_and_writable():
    head = groups()["head"]
    pod = head["template"]["spec"]
    container = ray_container(head)
    state_dir = env_of(container)["DOJO_STATE_DIR"]["value"]
    mounts = [m for m in container["volumeMounts"]
              if state_dir == m["mountPath"] or state_dir.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"DOJO_STATE_DIR={state_dir} is on no mounted volume: the queues vanish with the pod"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    claim = volume.get("persistentVolumeClaim", {}).get("claimName")
    assert claim == one("PersistentVolumeClaim")["metadata"]["name"]
    security = pod.get("securityContext", {})
    assert security.get("fsGroup") is not None, "no fsGroup: a fresh volume is root's and tokens.json cannot be written"
    # The image's user (ray, uid 1000) belongs to group users (100).
    assert security["fsGroup"] == security.get("runAsGroup", 100) == 100


def test_workers_need_no_shared_volume():
    for name, group in groups().items():
        if name == "head":
            continue
        pod = group["template"]["spec"]
        assert not [v for v in pod.get("volumes", []) if "persistentVolumeClaim" in v], f"{name} mounts a claim"
        assert "DOJO_STATE_DIR" not in env_of(ray_container(group)), f"{name} points at a state dir it does not have"


def test_the_claim_says_how_its_storage_class_is_chosen():
    claim = one("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    if "storageClassName" not in claim["spec"]:
        assert "storageClassName" in MANIFEST.read_text() and "kubectl get storageclass" in README.read_text()


# ---------------------------------------------------------------- starting and restarting

def test_dojo_starts_with_the_head_not_with_a_one_shot_job():
    kinds = [doc["kind"] for doc in documents()]
    assert "RayJob" not in kinds, "a finished RayJob re-applied unchanged does nothing: restarts would lose the API"
    assert cluster()["metadata"].get("annotations", {}).get("ray.io/overwrite-container-cmd") == "true"
    for name, group in groups().items():
        container = ray_container(group)
        script = " ".join(container.get("command", []) + container.get("args", []))
        assert "$KUBERAY_GEN_RAY_START_CMD" in script, f"{name}: with overwrite-container-cmd nothing else starts Ray"
        assert "ulimit -n 65536" in script
        assert ("dojo up" in script) == (name == "head")


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_the_head_start_script_runs_dojo_up_once_ray_answers_and_retries_it(tmp_path):
    container = ray_container(groups()["head"])
    assert container["command"][:2] == ["/bin/bash", "-c"]
    script = container["args"][0]
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    # ray: health-check fails twice; `ray start` stands for KubeRay's blocking command and waits
    # until dojo up has succeeded. dojo: fails once. sleep: instant.
    _stub(bin_dir / "ray", f"""
log={log}
case "$1" in
  health-check)
    n=$(grep -c '^health' $log 2>/dev/null); echo health >> $log; [ "$n" -ge 2 ];;
  start)
    echo "start $$ $# $*" >> $log
    for i in $(seq 200); do grep -q '^up-ok' $log && exit 0; /bin/sleep 0.05; done; exit 3;;
esac
""")
    _stub(bin_dir / "dojo", f"""
n=$(grep -c '^up' {log} 2>/dev/null)
if [ "$n" -eq 0 ]; then echo up-fail >> {log}; exit 1; fi
echo up-ok >> {log}
""")
    _stub(bin_dir / "sleep", "exit 0\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RAY_ADDRESS": "127.0.0.1:6379",
           # As KubeRay writes it: a JSON value in single quotes, which the shell must parse.
           "KUBERAY_GEN_RAY_START_CMD": "ray start --head --block --num-cpus=0 --resources='{\"x\": 1}'"}
    proc = subprocess.Popen([*container["command"], script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = log.read_text().splitlines()
    kinds = [line.split()[0] for line in events]
    assert kinds.count("health") == 3 and kinds.count("up-fail") == 1 and kinds.count("up-ok") == 1, events
    # dojo up only after Ray answered.
    assert kinds.index("up-fail") > max(i for i, k in enumerate(kinds) if k == "health")
    start = next(line for line in events if line.startswith("start"))
    # Ray's start replaced the shell (it gets the pod's SIGTERM) and got its arguments intact.
    _, pid, argc, args = start.split(maxsplit=3)
    assert pid == str(proc.pid)
    assert (argc, args) == ("5", 'start --head --block --num-cpus=0 --resources={"x": 1}')
    assert "dojo up failed" in err


# ---------------------------------------------------------------- resources

def test_every_resource_shape_a_job_asks_for_fits_a_worker_group():
    offers = {}
    for name, group in groups().items():
        container = ray_container(group)
        limits = container.get("resources", {}).get("limits", {})
        params = group.get("rayStartParams", {})
        cpus = quantity(params.get("num-cpus", limits.get("cpu", 0)))
        gpus = quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
        custom = yaml.safe_load(params["resources"].strip("'\"")) if "resources" in params else {}
        offers[name] = (cpus, gpus, custom, group.get("maxReplicas", 1))
    assert offers["head"][0] == 0, "the head must offer no CPUs: jobs belong on workers that scale to zero"
    shapes = requested_shapes()
    assert any(gpus for _, _, gpus, _ in shapes) and len(shapes) >= 5, "the scan of pipelines/ found too little"
    for where, cpus, gpus, custom in shapes:
        if cpus is None or gpus is None:
            continue
        fits = [name for name, (c, g, res, most) in offers.items()
                if name != "head" and most >= 1 and c >= cpus and g >= gpus
                and all(res.get(k, 0) >= v for k, v in custom.items())]
        assert fits, f"{where} asks for cpus={cpus} gpus={gpus} {custom}: no worker group offers that"
        if gpus:
            assert all(ray_container(groups()[name])["image"].endswith("-gpu") for name in fits), \
                f"{where} needs a GPU: its group must run the GPU image"
    for name, group in groups().items():
        if name != "head":
            assert group["minReplicas"] == 0 and group.get("replicas", 0) == 0, f"{name} does not scale to zero"


# ---------------------------------------------------------------- images

def test_images_are_the_ones_the_dockerfile_and_readme_build():
    args = dockerfile_args()
    base, version = args["BASE"], project_version()
    assert base == f"rayproject/ray:{ray_pin()}-py311", "the image's Ray must be the one pyproject.toml pins"
    assert cluster()["spec"]["rayVersion"] == ray_pin()
    builds = {}
    for line in readme_commands():
        if line.startswith("docker build"):
            words = shlex.split(line)
            assert words[words.index("-f") + 1] == str(DOCKERFILE.relative_to(ROOT)) and words[-1] == "."
            build_args = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--build-arg")
            builds[words[words.index("-t") + 1]] = build_args
    for name, group in groups().items():
        image = ray_container(group)["image"]
        repo, tag = image.rsplit(":", 1)
        assert tag in (version, f"{version}-gpu"), f"{name}: image tag {tag} is not dojo's version {version}"
        assert image in builds, f"{name} runs {image}, which the README never builds"
        wants_gpu = "nvidia.com/gpu" in ray_container(group).get("resources", {}).get("limits", {})
        assert tag.endswith("-gpu") == wants_gpu, f"{name}: GPU image on a CPU pod or the reverse"
        if wants_gpu:
            assert builds[image].get("TTS_RUNTIME") == "gpu"
            assert builds[image].get("BASE") == f"{base}-gpu"
        else:
            assert builds[image] == {}, f"{name} should run the default (CPU) build"


def test_the_gpu_image_swaps_in_onnxruntime_gpu_and_the_cpu_image_does_not():
    text = DOCKERFILE.read_text()
    assert dockerfile_args().get("TTS_RUNTIME") == "cpu"
    blocks = re.findall(r'if \[ "\$TTS_RUNTIME" = gpu \]; then(.*?)^\s*(?:elif|fi)\b', text, re.S | re.M)
    gpu_branch = blocks[0]
    assert "pip uninstall -y onnxruntime" in gpu_branch and "onnxruntime-gpu" in gpu_branch
    assert "CUDAExecutionProvider" in gpu_branch
    outside = re.sub(r'if \[ "\$TTS_RUNTIME" = gpu \]; then.*?^\s*fi\b', "", text, flags=re.S | re.M)
    assert "onnxruntime-gpu" not in re.sub(r"#.*", "", outside)


def test_every_dockerfile_run_step_is_valid_sh():
    """RUN lines go to /bin/sh (dash in Ray's Ubuntu images): a quoting slip fails the build, not a pod."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    steps = re.findall(r"^RUN (.*)$", text, re.M)
    assert len(steps) >= 3
    shell = shutil.which("dash") or "/bin/sh"
    for step in steps:
        result = subprocess.run([shell, "-n", "-c", step], capture_output=True, text=True)
        assert result.returncode == 0, f"{step}\n{result.stderr}"


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    assert path.exists(), "no .dockerignore: the venv, .git and caches go into every build context"
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: a pattern matches the path or one of its parents; the last match wins."""
    result = False
    parts = relative.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        for depth in range(1, len(parts) + 1):
            candidate = "/".join(parts[:depth])
            if fnmatch.fnmatch(candidate, pattern) or (pattern.startswith("**/") and (
                    fnmatch.fnmatch(candidate, pattern[3:]) or fnmatch.fnmatch(parts[depth - 1], pattern[3:]))):
                result = not negate
    return result


def test_dockerignore_leaves_out_the_heavy_things_and_keeps_the_package():
    patterns = dockerignore_patterns()
    for heavy in (".git", ".venv", "actors/__pycache__", "serve/__pycache__/cli.cpython-311.pyc", ".pytest_cache",
                  "dojo.egg-info"):
        assert ignored(heavy, patterns), f"{heavy} would go into the build context"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    needed = [p for p in tracked if p == "pyproject.toml" or p.split("/")[0] in CODE_DIRS]
    assert needed and not [p for p in needed if ignored(p, patterns)]


# ---------------------------------------------------------------- KubeRay's CRD schema (opt-in)

def schema_errors(value, schema: dict, path: str = "") -> list[str]:
    """Unknown fields, wrong types and enum misses of ``value`` against an OpenAPI v3 schema."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string"):
        return []
    errors = []
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                errors += schema_errors(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, f"{path}.{key}")
            elif props is not None or extra is False:
                errors.append(f"{path}.{key}: unknown field (kubectl refuses it)")
        errors += [f"{path}.{key}: required" for key in schema.get("required", []) if key not in value]
    elif kind == "array" and isinstance(value, list):
        for index, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{path}[{index}]")
    elif kind and not {"object": dict, "array": list, "string": str, "boolean": bool,
                       "integer": int, "number": (int, float)}[kind].__instancecheck__(value):
        errors.append(f"{path}: expected {kind}, got {type(value).__name__}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not one of {schema['enum']}")
    return errors


@pytest.mark.skipif(not os.environ.get("DOJO_KUBERAY_CRDS"), reason="set DOJO_KUBERAY_CRDS to KubeRay CRD files")
def test_the_raycluster_matches_kuberay_crd_schemas():
    doc = cluster()
    for crd_path in os.environ["DOJO_KUBERAY_CRDS"].split(os.pathsep):
        crd = yaml.safe_load(Path(crd_path).read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == doc["apiVersion"].split("/")[1])
        schema = version["schema"]["openAPIV3Schema"]
        spec_errors = schema_errors(doc["spec"], schema["properties"]["spec"], "spec")
        assert not spec_errors, f"{crd_path}:\n" + "\n".join(spec_errors)


# ---------------------------------------------------------------- the image's Python environment (opt-in)

def copy_build_context(dest: Path) -> None:
    """What `docker build .` sends: the repository less .dockerignore."""
    patterns = dockerignore_patterns()

    def skip(folder, names):
        rel = Path(folder).relative_to(ROOT)
        return [n for n in names if ignored(str(rel / n) if str(rel) != "." else n, patterns)]

    shutil.copytree(ROOT, dest, ignore=skip)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(not os.environ.get("DOJO_TEST_IMAGE_ENV"),
                    reason="minutes of pip: set DOJO_TEST_IMAGE_ENV=1 to build the image's environment")
def test_the_cpu_image_environment_installs_and_imports_every_job_type(tmp_path):
    text = DOCKERFILE.read_text()
    copy_dest = re.search(r"^COPY (?:--\S+ )*\. (\S+)$", text, re.M).group(1)
    install = [line for line in re.findall(r"^RUN (.*)$", text, re.M) if line.startswith("pip install")]
    assert len(install) == 1, f"expected one plain `RUN pip install ...` line, found {install}"
    context = tmp_path / "context"
    copy_build_context(context)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # The Dockerfile's own words, with the copied context in place of its path in the image (and
    # pip's cache allowed, so a second run is quick).
    words = [str(context) if w == copy_dest else w for w in shlex.split(install[0]) if w != "--no-cache-dir"]
    started = time.monotonic()
    subprocess.run([str(venv / "bin" / "python"), "-m", *words], check=True, cwd=tmp_path, timeout=1100)
    print(f"pip install took {time.monotonic() - started:.0f}s")
    # The head's start script calls these two.
    assert (venv / "bin" / "dojo").exists() and (venv / "bin" / "ray").exists()
    # Every module that defines a job type: the defaults `dojo up` loads and any other in pipelines/.
    modules = job_modules()
    check = (
        "import importlib, actors, actors.jobs as jobs\n"
        "from actors.settings import DEFAULT_JOB_MODULES\n"
        "assert 'site-packages' in actors.__file__, actors.__file__\n"
        f"for module in [*DEFAULT_JOB_MODULES, *{modules!r}]:\n"
        "    importlib.import_module(module)\n"
        "assert jobs.REGISTRY, 'no job type registered'\n"
        "print(sorted(jobs.REGISTRY))\n"
    )
    result = subprocess.run([str(venv / "bin" / "python"), "-c", check], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
