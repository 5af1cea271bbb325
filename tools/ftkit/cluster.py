"""Which node of a multi-node run this machine is, and where the nodes meet: torchrun's c10d rendezvous.

One `Cluster` per run. Every node runs the same recipe with the same cluster but its own `node_rank`; torchrun's
c10d rendezvous on `rdzv_host:rdzv_port` (node 0's address) joins them. Where the numbers come from: the command
line (`ftkit recipe run --nodes 2 --node-rank R --master-addr A`, `make recipe NODES=…`), SageMaker's
resourceconfig.json and SkyPilot's node variables (`ftkit.cloud`). We never launch nodes ourselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftkit.errors import FtkitError

DEFAULT_PORT = 29400
# How long torchrun waits for every node to join (c10d `join_timeout`), and the process group's collective timeout:
# a node that never comes, or a peer that stops answering, ends the run with an error instead of a hang.
JOIN_TIMEOUT_S = 300
COLLECTIVE_TIMEOUT_S = 600


@dataclass(frozen=True)
class Cluster:
    nodes: int = 1
    node_rank: int = 0
    rdzv_host: str | None = None  # node 0's address (MASTER_ADDR); needed when nodes > 1
    rdzv_port: int = DEFAULT_PORT
    rdzv_id: str = "ftkit"  # the same on every node of one run, distinct between runs sharing a host
    join_timeout_s: int = JOIN_TIMEOUT_S
    collective_timeout_s: int = COLLECTIVE_TIMEOUT_S

    def __post_init__(self) -> None:
        fix = "give --nodes N, --node-rank 0..N-1 and --master-addr (node 0's address), the same on every node"
        if self.nodes < 1:
            raise FtkitError.one(f"nodes must be at least 1, got {self.nodes}", field="nodes", fix=fix)
        if not 0 <= self.node_rank < self.nodes:
            bad = f"node rank {self.node_rank} is not in 0..{self.nodes - 1}"
            raise FtkitError.one(bad, field="node_rank", fix=fix)
        if self.nodes > 1 and not self.rdzv_host:
            raise FtkitError.one(f"a {self.nodes}-node run needs the rendezvous address", field="master_addr", fix=fix)

    @property
    def multi(self) -> bool:
        return self.nodes > 1

    @property
    def is_main(self) -> bool:
        """Node 0: the node that writes history, metrics, merged models and the report."""
        return self.node_rank == 0

    def world_size(self, processes: int) -> int:
        return self.nodes * processes

    def torchrun_args(self, processes: int) -> list[str]:
        """torchrun's arguments for `processes` ranks per node: `--standalone` on one node (a free local port, so two
        runs on one machine do not collide), else the c10d rendezvous every node joins."""
        if not self.multi:
            return ["--standalone", "--nnodes", "1", "--nproc_per_node", str(processes)]
        return [
            "--nnodes", str(self.nodes), "--node_rank", str(self.node_rank), "--nproc_per_node", str(processes),
            "--rdzv_backend", "c10d", "--rdzv_endpoint", f"{self.rdzv_host}:{self.rdzv_port}",
            "--rdzv_id", self.rdzv_id, "--rdzv_conf", f"join_timeout={self.join_timeout_s}",
            "--max_restarts", "0",
        ]  # fmt: skip

    def describe(self) -> str:
        if not self.multi:
            return "one node"
        return f"node {self.node_rank} of {self.nodes}, rendezvous {self.rdzv_host}:{self.rdzv_port} ({self.rdzv_id})"


SINGLE = Cluster()
