"""Training processes get PYTHONWARNINGS that silence the per-step deprecation warnings of DeepSpeed's collectives."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from ftkit.engines.base import QUIET_WARNINGS, quiet_warnings

# What DeepSpeed ZeRO does each step: a deprecated collective, while other code enters catch_warnings().
SCRIPT = textwrap.dedent("""
    import os, warnings, torch, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"])
    dist.init_process_group("gloo", rank=0, world_size=1)
    for _ in range(3):
        dist.all_gather_into_tensor(torch.zeros(2), torch.ones(2))
        with warnings.catch_warnings():
            pass
    dist.destroy_process_group()
""")


def _start(tmp_path: Path, port: str, pythonwarnings: str | None) -> subprocess.Popen[str]:
    script = tmp_path / "collective.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"} | {"PORT": port}
    if pythonwarnings is not None:
        env["PYTHONWARNINGS"] = pythonwarnings
    return subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True)


def test_the_deprecated_collective_warning_repeats_without_the_filter_and_is_silent_with_it(tmp_path: Path):
    # Both processes at once (each imports torch for seconds), each on its own port.
    noisy, quiet = _start(tmp_path, "29611", None), _start(tmp_path, "29612", quiet_warnings(""))
    noisy_err, quiet_err = noisy.communicate(timeout=120)[1], quiet.communicate(timeout=120)[1]
    assert noisy_err.count("all_gather_into_tensor` is deprecated") == 3  # once a step: what the filter is for
    assert "is deprecated" not in quiet_err and noisy.returncode == quiet.returncode == 0, quiet_err[-2000:]


def test_the_users_own_filters_come_after_ours_so_they_win():
    assert quiet_warnings("error::DeprecationWarning").split(",") == [*QUIET_WARNINGS, "error::DeprecationWarning"]
    assert quiet_warnings("") == ",".join(QUIET_WARNINGS)
