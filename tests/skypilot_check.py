"""Validate a SkyPilot task YAML with SkyPilot's own code, offline: its JSON schema of a task
(`sky.utils.schemas.get_task_schema`), then `sky.Task.from_yaml_config`, which parses the resources (accelerators,
image) and the file mounts. Run by an interpreter that has the `skypilot` package (tests/test_skypilot.py):
`python tests/skypilot_check.py TASK.yaml` prints one JSON line, exit 1 with SkyPilot's message when invalid."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def main(path: str) -> int:
    import sky
    from sky.utils import common_utils, schemas

    config = yaml.safe_load(Path(path).read_text())
    try:
        common_utils.validate_schema(config, schemas.get_task_schema(), "task YAML: ")
        task = sky.Task.from_yaml_config(dict(config), secrets_overrides=[("HF_TOKEN", "placeholder")])
    except Exception as exc:  # SkyPilot's own error, whatever its class
        print(json.dumps({"valid": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    [resources] = list(task.resources)
    print(json.dumps({"valid": True, "skypilot": sky.__version__, "num_nodes": task.num_nodes,
                      "accelerators": resources.accelerators, "image_id": resources.image_id,
                      "storage_mounts": sorted(task.storage_mounts or {})}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
