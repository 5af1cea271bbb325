"""Two hosts, one recipe: llama8b-full-fsdp's smoke profile as 2 nodes × 1 gloo process over a veth pair between two
network namespaces (tests/two_hosts.py), launched by `ftkit recipe run --nodes 2` on each host (torchrun's c10d
rendezvous on node 0's address), against the same profile as 1 node × 2 processes. The recipe's copy keeps its
training config and drops the smoke GGUF export and evaluation (minutes of CPU, the same on one node or two).

Checked: the loss at every step equals the single-node run's; node 0 alone writes metrics.json; killing both nodes
mid-stage and restarting them with --resume ends at the uninterrupted run's final loss; killing one node makes the
other exit non-zero within 2 minutes, naming the lost node. Needs root and `ip netns` (skipped with the reason
elsewhere); tens of minutes on 2 cores, so `make test-multinode` runs it, not `make test`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import two_hosts
from conftest import ROOT, copy_recipe, edit_yaml

pytestmark = pytest.mark.multinode

RECIPE = "llama8b-full-fsdp"
STEPS = 8  # the smoke profile's max_steps
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
NO_SLOW_EXPORTS = {"gguf": [], "quantize": [], "eval": None}


@dataclass
class NodeRun:
    procs: list[subprocess.Popen[bytes]]
    runs: list[Path]  # each node's --runs-dir
    outputs: list[Path]  # each node's terminal output
    ckpt: Path

    def wait(self, timeout: float) -> list[int]:
        return [p.wait(timeout=timeout) for p in self.procs]

    def run_dir(self, node: int) -> Path:
        [found] = (self.runs[node] / RECIPE).iterdir()
        return found

    def output(self, node: int) -> str:
        return self.outputs[node].read_text(errors="replace")


@pytest.fixture(scope="module", autouse=True)
def recipe_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """llama8b-full-fsdp under a recipes root of its own (FTKIT_RECIPES), its smoke exports cut to the merge."""
    root = tmp_path_factory.mktemp("recipes")
    dst = copy_recipe(RECIPE, root)
    edit_yaml(dst / "recipe.yaml", lambda d: d["profiles"]["smoke"]["export"].update(NO_SLOW_EXPORTS))
    before = ENV.get("FTKIT_RECIPES")
    ENV["FTKIT_RECIPES"] = str(root)
    yield dst
    if before is None:
        ENV.pop("FTKIT_RECIPES")
    else:
        ENV["FTKIT_RECIPES"] = before


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[two_hosts.Host, two_hosts.Host]]:
    if why := two_hosts.unavailable():
        pytest.skip(f"two hosts cannot be made here: {why}")
    with two_hosts.TwoHosts(tag=f"m{os.getpid() % 10000}") as pair:
        yield pair


def start_nodes(hosts: tuple[two_hosts.Host, two_hosts.Host], root: Path, rdzv: str, *extra: str,
                resume: list[Path] | None = None) -> NodeRun:  # fmt: skip
    """`ftkit recipe run` on both hosts, node 0 first; `resume[i]`: node i continues that run instead."""
    a = hosts[0]
    run = NodeRun([], [], [], root / "ckpt")
    for rank, host in enumerate(hosts):
        runs, out = root / f"node{rank}", root / f"node{rank}-{len(list(root.glob(f'node{rank}-*.out')))}.out"
        cmd = [sys.executable, "-m", "ftkit", "recipe", "run", "--runs-dir", str(runs),
               "--nodes", "2", "--node-rank", str(rank), "--master-addr", a.addr, "--rdzv-id", rdzv,
               "--processes", "1", *extra]  # fmt: skip
        cmd += ["--resume", str(resume[rank])] if resume else [RECIPE, "--profile", "smoke", "--checkpoint-dir",
                                                              str(run.ckpt)]  # fmt: skip
        env = {**ENV, "GLOO_SOCKET_IFNAME": host.ifname}
        run.procs.append(host.popen(cmd, env, out, cwd=ROOT))
        run.runs.append(runs)
        run.outputs.append(out)
    return run


def train_losses(history: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    return [(int(r["step"]), r["loss"]) for r in rows if "loss" in r]


def wait_for_steps(history: Path, steps: int, procs: list[subprocess.Popen[bytes]], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if history.is_file() and len(train_losses(history)) >= steps:
            return
        if any(p.poll() is not None for p in procs):
            pytest.fail(f"a node exited before step {steps}: {[p.returncode for p in procs]}")
        time.sleep(0.5)
    pytest.fail(f"no step {steps} in {history} within {timeout} s")


@pytest.fixture(scope="module")
def one_node(hosts, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The reference: the same profile as 1 node × 2 gloo processes (torchrun --standalone), on this machine; it
    asks for the hosts first only so that a machine without them skips before training anything."""
    root = tmp_path_factory.mktemp("one-node")
    cmd = [sys.executable, "-m", "ftkit", "recipe", "run", RECIPE, "--profile", "smoke", "--processes", "2",
           "--runs-dir", str(root)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [run_dir] = (root / RECIPE).iterdir()
    return run_dir


@pytest.fixture(scope="module")
def two_nodes(hosts, tmp_path_factory: pytest.TempPathFactory) -> NodeRun:  # type: ignore[no-untyped-def]
    run = start_nodes(hosts, tmp_path_factory.mktemp("two-nodes"), "whole")
    codes = run.wait(timeout=1800)
    assert codes == [0, 0], run.output(0)[-3000:] + run.output(1)[-3000:]
    return run


def test_two_nodes_train_every_step_like_one_node_with_two_processes(one_node: Path, two_nodes: NodeRun) -> None:
    single = train_losses(one_node / "sft" / "history.jsonl")
    multi = train_losses(two_nodes.ckpt / "sft" / "history.jsonl")
    table = ["| step | 1 node × 2 processes | 2 nodes × 1 process |", "| ---: | ---: | ---: |"]
    table += [f"| {s} | {a:.6f} | {b:.6f} |" for (s, a), (_, b) in zip(single, multi, strict=False)]
    print("\n" + "\n".join(table))  # the side-by-side losses (pytest -s)
    assert [s for s, _ in multi] == [s for s, _ in single] == list(range(1, STEPS + 1))
    assert [loss for _, loss in multi] == pytest.approx([loss for _, loss in single], rel=1e-3)
    evals = [json.loads(line).get("eval_loss") for line in (one_node / "sft" / "history.jsonl").open()]
    evals_multi = [json.loads(line).get("eval_loss") for line in (two_nodes.ckpt / "sft" / "history.jsonl").open()]
    assert [e for e in evals_multi if e] == pytest.approx([e for e in evals if e], rel=1e-3)


def test_node_zero_alone_writes_metrics_and_gates_the_run(two_nodes: NodeRun) -> None:
    metrics = json.loads((two_nodes.run_dir(0) / "metrics.json").read_text())
    assert metrics["status"] == "passed"
    assert metrics["cluster"] == {"nodes": 2, "node_rank": 0, "rendezvous": "c10d",
                                  "rdzv_endpoint": metrics["cluster"]["rdzv_endpoint"], "rdzv_id": "whole"}  # fmt: skip
    assert metrics["stages"]["sft"]["steps"] == STEPS
    assert (two_nodes.ckpt / "metrics.json").read_text() == (two_nodes.run_dir(0) / "metrics.json").read_text()
    worker = two_nodes.run_dir(1)
    assert not list(worker.rglob("metrics.json")), "node 1 writes no metrics.json"
    assert (worker / "sft" / "train.log").is_file(), "node 1 keeps its own training log"
    assert "node 1: every stage trained" in two_nodes.output(1)
    assert (two_nodes.run_dir(0) / "sft" / "merged" / "config.json").is_file(), "node 0 saved the final model"


def test_both_nodes_killed_mid_stage_resume_to_the_uninterrupted_final_loss(hosts, two_nodes: NodeRun, tmp_path):  # type: ignore[no-untyped-def]
    saves = ["--set", "sft.saves_per_epoch=null", "--set", "sft.save_steps=2"]
    run = start_nodes(hosts, tmp_path, "killed", *saves)
    history = run.ckpt / "sft" / "history.jsonl"
    wait_for_steps(history, 5, run.procs)  # checkpoint-4 is saved; step 6's is not begun
    for host in hosts:
        host.kill_all()
    run.wait(timeout=60)
    kept = sorted(p.name for p in (run.ckpt / "sft").glob("checkpoint-*"))
    assert "checkpoint-4" in kept, kept

    resumed = start_nodes(hosts, tmp_path, "resumed", resume=[run.run_dir(0), run.ckpt])
    codes = resumed.wait(timeout=1800)
    assert codes == [0, 0], resumed.output(0)[-3000:] + resumed.output(1)[-3000:]
    after = train_losses(history)
    base = train_losses(two_nodes.ckpt / "sft" / "history.jsonl")
    assert [s for s, _ in after] == list(range(1, STEPS + 1)), "every step logged once"
    assert after[-1][1] == pytest.approx(base[-1][1], rel=1e-3)
    metrics = json.loads((run.run_dir(0) / "metrics.json").read_text())
    assert metrics["status"] == "passed" and metrics["resumes"][-1]["stage"] == "sft"


def test_killing_one_node_stops_the_other_within_two_minutes_naming_it(hosts, tmp_path):  # type: ignore[no-untyped-def]
    run = start_nodes(hosts, tmp_path, "lost")
    wait_for_steps(run.ckpt / "sft" / "history.jsonl", 1, run.procs)
    hosts[1].kill_all()
    killed = time.monotonic()
    code = run.procs[0].wait(timeout=180)
    waited = time.monotonic() - killed
    out = run.output(0)
    assert code == 4, out[-3000:]  # the engine failed
    assert waited < 120, f"node 0 took {waited:.0f} s to stop"
    assert f"losing contact with {hosts[1].addr}" in out, out[-3000:]
    assert hosts[1].name in out, "the lost node is named by its host name too"


def test_a_two_instance_sagemaker_job_trains_like_one_node_and_only_the_first_instance_publishes(  # type: ignore[no-untyped-def]
    hosts, recipe_copy: Path, one_node: Path, tmp_path: Path
):
    """Each host runs the image's entrypoint (`python -m ftkit.cloud.entrypoint train`) on its own /opt/ml tree
    whose resourceconfig.json names both hosts, as SageMaker starts every instance of a job; one process each."""
    edit_yaml(recipe_copy / "recipe.yaml", lambda d: d["profiles"]["smoke"].update(processes=1))
    names = sorted(h.name for h in hosts)
    procs, roots = [], []
    for host in hosts:
        root = tmp_path / f"ml-{host.name}"
        (root / "input" / "config").mkdir(parents=True)
        (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps({"recipe": RECIPE,
                                                                                 "profile": "smoke"}))  # fmt: skip
        resource = {"current_host": host.name, "hosts": names, "network_interface_name": host.ifname}
        (root / "input" / "config" / "resourceconfig.json").write_text(json.dumps(resource))
        env = {**ENV, "FTKIT_SM_ROOT": str(root), "TRAINING_JOB_NAME": "ftkit-sm-test"}
        env.pop("FTKIT_RUN_AS", None)
        cmd = [sys.executable, "-m", "ftkit.cloud.entrypoint", "train"]
        procs.append(host.popen(cmd, env, tmp_path / f"{host.name}.out", cwd=ROOT))
        roots.append(root)
    codes = [p.wait(timeout=1800) for p in procs]
    outs = [(tmp_path / f"{h.name}.out").read_text(errors="replace") for h in hosts]
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    first, second = roots if hosts[0].name == names[0] else roots[::-1]
    assert (first / "model" / "config.json").is_file() and (first / "model" / "ftkit" / "metrics.json").is_file()
    assert not (second / "model").is_dir() or not any((second / "model").iterdir()), "node 1 publishes nothing"
    assert not (first / "output" / "failure").exists() and not (second / "output" / "failure").exists()
    metrics = json.loads((first / "model" / "ftkit" / "metrics.json").read_text())
    assert metrics["status"] == "passed" and metrics["cluster"]["rendezvous"] == "static"
    sagemaker = train_losses(first / "checkpoints" / "sft" / "history.jsonl")
    single = train_losses(one_node / "sft" / "history.jsonl")
    assert [loss for _, loss in sagemaker] == pytest.approx([loss for _, loss in single], rel=1e-3)
