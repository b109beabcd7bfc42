"""The multi-machine configs: ``config/k8s/`` against the Kubernetes API schemas (offline, with
``kubernetes-validate``, which bundles them) and the fields a shard needs; ``config/slurm/``'s
array script as bash, its array against the N it documents, and its command line run with the
variables Slurm sets (a stand-in ``assetsync`` resolves ``--shard auto`` with the engine's own
:mod:`engine.sharding` and reports what it was given)."""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as k8s_utils

from engine.sharding import COUNT_VARIABLE

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "config" / "k8s"
SLURM_SCRIPT = ROOT / "config" / "slurm" / "mirror-array.sbatch"
JOBS = ("indexed-job-shared.yaml", "indexed-job-local.yaml")
OLDEST_K8S = (1, 29)  # what the manifests say they need (backoffLimitPerIndex)


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def supported_versions() -> list[str]:
    bundled = sorted(
        {v for v in k8s_utils.all_versions()}, key=lambda v: tuple(int(p) for p in v.split("."))
    )
    wanted = [v for v in bundled if tuple(int(p) for p in v.split(".")[:2]) >= OLDEST_K8S]
    assert wanted, f"kubernetes-validate bundles no schema from {OLDEST_K8S} on: {bundled}"
    return wanted


def validate(doc: dict[str, Any], version: str) -> None:
    # strict: unknown fields are errors, so a misspelt key cannot pass. A kind without a schema
    # raises SchemaNotFoundError (the CLI only warns about it): here that fails the test.
    kubernetes_validate.validate(doc, version, strict=True)


# --- Kubernetes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml")))
def test_every_k8s_document_matches_the_api_schema(name):
    docs = documents(name)
    assert docs
    for version in supported_versions():
        for doc in docs:
            validate(doc, version)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "completionsMode"), "Indexed"),  # a misspelt field
        (("spec", "completions"), "eight"),  # a wrong type
        (("spec", "template", "spec", "containers", 0, "envv"), []),
        (("spec", "template", "spec", "containers", 0, "env", 3, "valueFrom", "secretKeyRef"), "x"),
    ],
)
# The schemas check names, types and required fields; values such as an enum's (an unknown
# podFailurePolicy action passes them) are checked by the field tests below.
def test_the_validator_rejects_a_broken_job(path, value):
    job = copy.deepcopy(documents(JOBS[0])[0])
    node = job
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job, supported_versions()[-1])


def container(job: dict[str, Any]) -> dict[str, Any]:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return only


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container(job).get("env", [])}


@pytest.mark.parametrize("name", JOBS)
def test_the_job_runs_one_shard_per_index(name):
    (job,) = [d for d in documents(name) if d["kind"] == "Job"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    completions = spec["completions"]
    assert 1 <= spec["parallelism"] <= completions
    env = env_of(job)
    # Kubernetes hands a pod its index, not the count: the manifest must carry the same N.
    assert int(env[COUNT_VARIABLE]["value"]) == completions
    args = container(job)["args"]
    assert args[0] == "mirror"
    assert args[args.index("--shard") + 1] == "auto"
    dest = Path(args[args.index("--dest") + 1])
    mounts = [m["mountPath"] for m in container(job)["volumeMounts"]]
    assert any(dest.is_relative_to(m) for m in mounts), (dest, mounts)
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    # Exit 2 (usage) and 3 (token refused) are not retried: they fail the same way again.
    rules = spec["podFailurePolicy"]["rules"]
    fail_fast = [r for r in rules if r["action"] == "FailIndex"]
    assert fail_fast and set(fail_fast[0]["onExitCodes"]["values"]) == {2, 3}


@pytest.mark.parametrize("name", JOBS)
def test_the_token_comes_from_the_example_secret(name):
    (job,) = [d for d in documents(name) if d["kind"] == "Job"]
    (secret,) = documents("secret.example.yaml")
    ref = env_of(job)["PICSELLIA_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    text = (K8S / name).read_text()
    assert secret["stringData"][ref["key"]] not in text  # no token in the Job itself


def test_the_shared_layout_mounts_one_read_write_many_volume():
    docs = documents("indexed-job-shared.yaml")
    (job,) = [d for d in docs if d["kind"] == "Job"]
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    (volume,) = job["spec"]["template"]["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_local_layout_gives_each_shard_its_own_folder_one_pod_per_node():
    (job,) = documents("indexed-job-local.yaml")
    (mount,) = container(job)["volumeMounts"]
    # subPathExpr expands the container's variables: JOB_COMPLETION_INDEX is one of them.
    assert "$(JOB_COMPLETION_INDEX)" in mount["subPathExpr"]
    pod = job["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "hostPath" in volume
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["labelSelector"]["matchLabels"].items()
        <= job["spec"]["template"]["metadata"]["labels"].items()
    )


# --- Slurm -----------------------------------------------------------------------------------


def test_the_slurm_script_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(SLURM_SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_slurm_array_is_the_documented_n():
    text = SLURM_SCRIPT.read_text()
    (array,) = re.findall(r"^#SBATCH --array=(\S+)$", text, re.MULTILINE)
    first, last = (int(x) for x in re.fullmatch(r"(\d+)-(\d+)", array).groups())
    documented = int(re.search(r"--array=\S+ here \(N = (\d+)\)", text).group(1))
    assert first == 0 and last - first + 1 == documented
    assert f"--array={array} here" in text
    # sbatch stops reading #SBATCH lines at the first command: all of them come before it.
    first_command = next(
        i
        for i, line in enumerate(text.splitlines()[1:], 1)
        if line.strip() and not line.startswith("#")
    )
    assert all(
        i < first_command for i, line in enumerate(text.splitlines()) if line.startswith("#SBATCH")
    )


STAND_IN = """\
import json, os, sys
from engine.sharding import resolve_shard
args = sys.argv[1:]
shard = resolve_shard(args[args.index("--shard") + 1], os.environ)
print(json.dumps({"args": args, "shard": str(shard.shard), "said": shard.describe()}))
"""


@pytest.fixture
def slurm_env(tmp_path):
    """A user's environment on a node: a stand-in assetsync and a private token file."""
    stand_in = tmp_path / "assetsync"
    stand_in.write_text(f"#!{sys.executable}\n{STAND_IN}")
    stand_in.chmod(0o755)
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    token.chmod(0o600)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "USER": "someone",
        "PYTHONPATH": str(ROOT),
        "ASSETSYNC_BIN": str(stand_in),
        "ASSETSYNC_TOKEN_FILE": str(token),
        "ASSETSYNC_DATASET_VERSION": "5b3359a4-0723-4741-9e1d-e447e4988af5",
        "ASSETSYNC_LOCAL_ROOT": str(tmp_path / "scratch"),
    }
    return env, token


def slurm_vars(task: int, low: int, high: int, step: int) -> dict[str, str]:
    count = (high - low) // step + 1
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_ARRAY_JOB_ID": "4240",
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_TASK_MIN": str(low),
        "SLURM_ARRAY_TASK_MAX": str(high),
        "SLURM_ARRAY_TASK_STEP": str(step),
    }


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SLURM_SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("task", "low", "high", "step", "shard"),
    [
        (0, 0, 7, 1, "0/8"),  # the script's own --array=0-7
        (7, 0, 7, 1, "7/8"),
        (1, 1, 8, 1, "0/8"),  # sbatch --array=1-8
        (14, 0, 14, 2, "7/8"),  # sbatch --array=0-14:2
    ],
)
def test_each_array_task_mirrors_its_shard_into_its_own_local_dest(
    slurm_env, task, low, high, step, shard
):
    env, token = slurm_env
    done = run_script({**env, **slurm_vars(task, low, high, step)}, "--delete")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["shard"] == shard
    assert "Slurm array" in got["said"]
    args = got["args"]
    k = shard.split("/")[0]
    expected_dest = f"{env['ASSETSYNC_LOCAL_ROOT']}/{env['ASSETSYNC_DATASET_VERSION']}/shard-{k}"
    assert args[args.index("--dest") + 1] == expected_dest
    assert args[args.index("--token-file") + 1] == str(token)
    assert args[args.index("--dataset-version") + 1] == env["ASSETSYNC_DATASET_VERSION"]
    assert args[-1] == "--delete"  # sbatch's arguments after the script reach the mirror
    assert "secret-token" not in done.stdout + done.stderr


def test_the_shared_layout_puts_every_shard_in_one_dest(slurm_env, tmp_path):
    env, _ = slurm_env
    shared = str(tmp_path / "lustre" / "mirror")
    dests = set()
    shards = set()
    for task in range(8):
        vars_ = {**env, **slurm_vars(task, 0, 7, 1)}
        done = run_script({**vars_, "ASSETSYNC_SHARD_DESTS": "shared", "ASSETSYNC_DEST": shared})
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        dests.add(got["args"][got["args"].index("--dest") + 1])
        shards.add(got["shard"])
    assert dests == {shared}
    assert shards == {f"{k}/8" for k in range(8)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ASSETSYNC_SHARD_DESTS": "shared"}, "ASSETSYNC_SHARD_DESTS=shared needs ASSETSYNC_DEST"),
        ({"ASSETSYNC_SHARD_DESTS": "nfs"}, "ASSETSYNC_SHARD_DESTS must be local or shared"),
        ({"ASSETSYNC_DATASET_VERSION": ""}, "set ASSETSYNC_DATASET_VERSION"),
        ({"ASSETSYNC_TOKEN_FILE": "/nonexistent/token"}, "no readable token file"),
    ],
)
def test_the_script_refuses_a_bad_setup_before_running_anything(slurm_env, change, message):
    env, _ = slurm_env
    done = run_script({**env, **slurm_vars(0, 0, 7, 1), **change})
    assert done.returncode != 0
    assert message in done.stderr
    assert done.stdout == ""  # the mirror never started


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_token_file_others_can_read_is_refused(slurm_env, mode):
    env, token = slurm_env
    token.chmod(mode)
    done = run_script({**env, **slurm_vars(0, 0, 7, 1)})
    assert done.returncode == 2
    assert f"mode {stat.S_IMODE(mode):o}" in done.stderr and "chmod 600" in done.stderr
    assert done.stdout == ""


def test_sourcing_the_script_runs_nothing(slurm_env):
    env, _ = slurm_env
    done = subprocess.run(
        ["bash", "-c", f'source "{SLURM_SCRIPT}"; type mirror_shard >/dev/null && echo sourced'],
        env={**env, **slurm_vars(0, 0, 7, 1)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "sourced\n"
