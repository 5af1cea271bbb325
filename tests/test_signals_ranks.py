"""SIGTERM forwarding to the ranks of a launcher (torchrun under Axolotl's CLI), on a real process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ftkit.engines.forward_sigterm import ForwardSignals, rank_processes

# A "launcher" (no LOCAL_RANK) starting two "ranks" (LOCAL_RANK set), each with a child of its own (inherits it).
# A rank that gets SIGTERM writes `<rank>.stopped` and exits 6; the launcher exits when its ranks have.
LAUNCHER = textwrap.dedent(
    """
    import os, subprocess, sys
    rank = '''
    import os, signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    def stop(*_):
        open(os.path.join(sys.argv[1], os.environ["LOCAL_RANK"] + ".stopped"), "w").close()
        child.kill()
        sys.exit(6)
    signal.signal(signal.SIGTERM, stop)
    open(os.path.join(sys.argv[1], os.environ["LOCAL_RANK"] + ".ready"), "w").close()
    time.sleep(60)
    '''
    ranks = [subprocess.Popen([sys.executable, "-c", rank, sys.argv[1]], env={**os.environ, "LOCAL_RANK": str(i)})
             for i in range(2)]
    sys.exit(max(r.wait() for r in ranks))
    """
)


def _start(tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_RANK"}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path)], env=env)
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"{i}.ready").exists() for i in range(2)):
        assert time.monotonic() < deadline and proc.poll() is None, "the fake ranks did not start"
        time.sleep(0.05)
    return proc


def test_the_ranks_of_a_launcher_are_its_descendants_with_local_rank_not_their_children(tmp_path: Path):
    proc = _start(tmp_path)
    try:
        ranks = rank_processes(proc.pid)
        assert len(ranks) == 2 and proc.pid not in ranks
        import psutil

        assert sorted(psutil.Process(p).environ()["LOCAL_RANK"] for p in ranks) == ["0", "1"]
        assert all(psutil.Process(p).parent().pid == proc.pid for p in ranks)  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait()
    assert rank_processes(proc.pid) == []  # gone: nothing to signal


def test_sigterm_goes_to_every_rank_and_the_launcher_then_ends_with_their_code(tmp_path: Path):
    proc = _start(tmp_path)
    with ForwardSignals(to_ranks=True) as forward:
        forward.attach(proc.pid)
        os.kill(os.getpid(), signal.SIGTERM)  # what SageMaker/RunPod/docker stop send to the runner
        code = proc.wait(timeout=30)
        forward.detach()
    assert forward.received == "SIGTERM"
    assert (tmp_path / "0.stopped").exists() and (tmp_path / "1.stopped").exists()
    assert code == 6  # the launcher was not signalled: it ended because its ranks stopped
