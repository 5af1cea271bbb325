"""Multi-node cloud runs: SageMaker's resourceconfig.json and RunPod's Instant Cluster variables become this node's
`Cluster` (pure functions), and the entrypoint hands it to the runner (two fake /opt/ml trees, one per instance of a
2-instance job, with a runner that records the RunOptions and trains nothing); `ftkit cloud sagemaker
--instance-count`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from ftkit.cli import main
from ftkit.cloud.entrypoint import PrintEvents, run_runpod, run_sagemaker
from ftkit.cloud.nodes import cluster_from_resourceconfig, runpod_nodes, sagemaker_nodes
from ftkit.cloud.sagemaker import sagemaker_job
from ftkit.cloud.settings import CloudRun
from ftkit.cluster import DEFAULT_PORT, SINGLE
from ftkit.errors import ExitCode, FtkitError
from ftkit.pipeline.run import RunOptions, RunResult
from ftkit.recipes.load import load_recipe

NAME = "tiny-trl-sft-dpo"
TWO = {"current_host": "algo-2", "hosts": ["algo-2", "algo-1"], "network_interface_name": "eth1"}


def test_each_host_gets_its_place_in_the_sorted_hosts_and_all_meet_on_the_first():
    clusters = [cluster_from_resourceconfig({**TWO, "current_host": h}, "job-7") for h in ("algo-1", "algo-2")]
    assert [c.node_rank for c in clusters] == [0, 1]
    assert {(c.nodes, c.rdzv_host, c.rdzv_port, c.rdzv_id) for c in clusters} == {(2, "algo-1", DEFAULT_PORT, "job-7")}
    assert clusters[0].is_main and not clusters[1].is_main


def test_a_one_instance_job_is_a_single_node_run():
    assert cluster_from_resourceconfig({"current_host": "algo-1", "hosts": ["algo-1"]}) == SINGLE


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]}, "current_host"),
        ({"current_host": "algo-1", "hosts": []}, "hosts"),
        ({"current_host": "algo-1", "hosts": ["algo-1", "algo-1"]}, "hosts"),
        ({"current_host": "algo-1", "hosts": "algo-1"}, "hosts"),
    ],
)
def test_a_resourceconfig_that_cannot_place_this_host_names_the_field(config: dict, field: str):
    with pytest.raises(FtkitError) as exc:
        cluster_from_resourceconfig(config, source="/opt/ml/input/config/resourceconfig.json")
    [problem] = exc.value.problems
    assert problem.field == field and problem.file.endswith("resourceconfig.json") and problem.fix


def test_sagemaker_socket_interface_comes_from_the_resourceconfig_unless_already_set():
    cluster, extra = sagemaker_nodes(TWO, {"TRAINING_JOB_NAME": "llama70b-2026"})
    assert cluster.rdzv_id == "llama70b-2026" and cluster.node_rank == 1
    assert extra == {"GLOO_SOCKET_IFNAME": "eth1", "NCCL_SOCKET_IFNAME": "eth1"}
    _, kept = sagemaker_nodes(TWO, {"NCCL_SOCKET_IFNAME": "ens5"})
    assert kept == {"GLOO_SOCKET_IFNAME": "eth1"}
    assert sagemaker_nodes({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth1"}, {}) == (
        SINGLE,
        {},
    )


def test_runpod_instant_cluster_variables_make_the_same_rendezvous():
    env = {"NUM_NODES": "2", "NODE_RANK": "1", "PRIMARY_ADDR": "10.65.0.2", "PRIMARY_PORT": "29500"}
    cluster, extra = runpod_nodes(env, "ftkit-r-full")
    assert (cluster.nodes, cluster.node_rank, cluster.rdzv_host, cluster.rdzv_port) == (2, 1, "10.65.0.2", 29500)
    assert extra == {"GLOO_SOCKET_IFNAME": "ens1", "NCCL_SOCKET_IFNAME": "ens1"}
    assert runpod_nodes({"RUNPOD_POD_ID": "x"}) == (SINGLE, {}), "a single pod is one node"
    with pytest.raises(FtkitError) as exc:
        runpod_nodes({"NUM_NODES": "2", "NODE_RANK": "0"})
    assert exc.value.problems[0].field == "PRIMARY_ADDR"
    with pytest.raises(FtkitError) as exc:
        runpod_nodes({"NUM_NODES": "two"})
    assert exc.value.problems[0].field == "NUM_NODES"


class RecordingRunner:
    """Stands in for run_recipe: records the options, trains nothing, returns a passed run."""

    def __init__(self) -> None:
        self.options: list[RunOptions] = []

    def __call__(self, recipe: str, opts: RunOptions, events: Any) -> RunResult:
        self.options.append(opts)
        return RunResult(opts.run_dir or Path("."), {"status": "passed", "stages": {}}, [])


def _ml_tree(root: Path, host: str) -> Path:
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"recipe": NAME, "profile": "smoke"}))
    (config / "resourceconfig.json").write_text(json.dumps({**TWO, "current_host": host}))
    return root


def test_two_instances_of_one_job_each_run_their_node_and_only_node_0_publishes(stub_recipe, tmp_path: Path):  # type: ignore[no-untyped-def]
    stub_recipe(NAME)
    runner, published = RecordingRunner(), []
    codes, envs = [], []
    for host in ("algo-1", "algo-2"):
        root = _ml_tree(tmp_path / host, host)
        env: dict[str, str] = {"TRAINING_JOB_NAME": "tiny-job-1"}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("ftkit.cloud.entrypoint.publish_run", lambda *a, h=host: published.append(h) or {"from": "m",
                       "model_dir": "d", "files": 0})  # fmt: skip
            codes.append(run_sagemaker(root, PrintEvents(lambda text: None), runner=runner, env=env))
        envs.append(env)
    assert codes == [ExitCode.OK, ExitCode.OK]
    first, second = (o.cluster for o in runner.options)
    assert (first.node_rank, second.node_rank) == (0, 1)
    assert first.rdzv_host == second.rdzv_host == "algo-1" and first.rdzv_id == second.rdzv_id == "tiny-job-1"
    assert [o.checkpoint_dir for o in runner.options] == [tmp_path / h / "checkpoints" for h in ("algo-1", "algo-2")]
    assert published == ["algo-1"], "node 0 alone writes /opt/ml/model"
    assert all(e["GLOO_SOCKET_IFNAME"] == e["NCCL_SOCKET_IFNAME"] == "eth1" for e in envs)


def test_an_instance_whose_resourceconfig_is_wrong_fails_with_output_failure(stub_recipe, tmp_path: Path):  # type: ignore[no-untyped-def]
    stub_recipe(NAME)
    root = _ml_tree(tmp_path / "ml", "algo-9")
    runner = RecordingRunner()
    assert run_sagemaker(root, PrintEvents(lambda text: None), runner=runner, env={}) == ExitCode.USAGE
    assert "current_host" in (root / "output" / "failure").read_text() and runner.options == []


def test_a_runpod_cluster_node_runs_its_node_of_the_run(stub_recipe, tmp_path: Path):  # type: ignore[no-untyped-def]
    stub_recipe(NAME)
    runner = RecordingRunner()
    env = {"RECIPE": NAME, "PROFILE": "smoke", "FTKIT_WORKSPACE": str(tmp_path), "NUM_NODES": "2", "NODE_RANK": "1",
           "PRIMARY_ADDR": "10.65.0.2", "PRIMARY_PORT": "29500", "GLOO_SOCKET_IFNAME": "ens1",
           "NCCL_SOCKET_IFNAME": "ens1"}  # fmt: skip
    assert run_runpod(env, PrintEvents(lambda text: None), runner=runner) == ExitCode.OK
    [opts] = runner.options
    assert (opts.cluster.nodes, opts.cluster.node_rank, opts.cluster.rdzv_host) == (2, 1, "10.65.0.2")
    assert opts.runs_root == tmp_path / "runs"


def test_sagemaker_instance_count_defaults_to_the_profiles_nodes_and_notes_how_nodes_meet():
    loaded = load_recipe(str(ROOT / "recipes" / "llama70b-full-fsdp"), check_profiles=False)
    job = sagemaker_job(loaded, CloudRun(loaded.name, "full"), instance_type="ml.p5.48xlarge", run_id="r")
    assert job.estimator["instance_count"] == 2
    assert any("each runs one node" in n for n in job.notes)
    assert not any("needs 2 x 8" in n for n in job.notes), "2 x ml.p5.48xlarge = 16 H100s: enough"
    one = sagemaker_job(loaded, CloudRun(loaded.name, "full"), instance_type="ml.p5.48xlarge", instance_count=1)
    assert one.estimator["instance_count"] == 1 and any("needs 2 x 8 GPU(s)" in n for n in one.notes)
    smoke = sagemaker_job(loaded, CloudRun(loaded.name, "smoke"))
    assert smoke.estimator["instance_count"] == 1


def test_cli_sagemaker_instance_count_reaches_the_printed_estimator(capsys: pytest.CaptureFixture[str]):
    recipe = str(ROOT / "recipes" / "llama70b-full-fsdp")
    assert main(["cloud", "sagemaker", recipe, "--instance-count", "3", "--instance-type", "ml.p5.48xlarge",
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["estimator"]["instance_count"] == 3 and "instance_count=3" in out["python"]
    assert main(["cloud", "sagemaker", recipe, "--instance-count", "0"]) == ExitCode.USAGE


def test_runpod_notes_point_a_multi_node_profile_to_an_instant_cluster():
    from ftkit.cloud.carry import RecipeSource
    from ftkit.cloud.runpod import pod_template

    loaded = load_recipe(str(ROOT / "recipes" / "llama70b-full-fsdp"), check_profiles=False)
    source = RecipeSource(loaded.name, loaded.dir, "", False, "in the image")
    _, notes = pod_template(loaded, CloudRun(loaded.name, "full"), source=source)
    assert any("Instant Cluster" in n and "2 nodes" in n for n in notes)
    _, smoke = pod_template(loaded, CloudRun(loaded.name, "smoke"), source=source)
    assert not any("Instant Cluster" in n for n in smoke)
