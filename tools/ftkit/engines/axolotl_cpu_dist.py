"""Axolotl plugin for several training processes on a machine without GPUs (the smoke profiles of multi-GPU recipes).

torchrun starts the ranks (Axolotl's own `--launcher torchrun`); this plugin, imported only inside them, makes the
places that assume a GPU work on the CPU with the gloo backend, and changes nothing else: accelerate's process
state (and with it FSDP and DeepSpeed), Axolotl's FSDP device mesh and its QLoRA + FSDP device map. Each patch and
why: docs/running-recipes.md, "`engines/axolotl_cpu_dist.py`: what is patched".

`plugins: [ftkit.engines.axolotl_cpu_dist.CpuDistributedPlugin]` (added by the runner, `AxolotlEngine`).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from axolotl.integrations.base import BasePlugin


def cpu_ranks() -> bool:
    """True in a rank of a multi-process launch on a machine without CUDA."""
    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def gloo_on_cpu() -> None:
    """accelerate's process state, wherever it is made, as gloo ranks on the CPU (point 1). Not through
    `cpu=True` / `ACCELERATE_USE_CPU`: accelerate turns DeepSpeed off for such a state; this one stays eligible
    (DeepSpeed's own CPU accelerator then joins the same gloo group)."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    original = PartialState._prepare_backend
    if not getattr(original, "_ftkit_cpu", False):

        @functools.wraps(original)
        def _prepare_backend(self: Any, cpu: bool = False, sagemaker_dp: bool = False, backend: str | None = None
                             ) -> tuple[str | None, Any]:  # fmt: skip
            found, kind = original(self, cpu, sagemaker_dp, backend)
            if kind == DistributedType.NO and cpu_ranks():
                return "gloo", DistributedType.MULTI_CPU
            return found, kind

        _prepare_backend._ftkit_cpu = True  # type: ignore[attr-defined]
        PartialState._prepare_backend = _prepare_backend  # type: ignore[method-assign]
    state = PartialState._shared_state
    if state and state.get("num_processes", 1) == 1:  # made before this plugin loaded: make it again
        PartialState._reset_state()
    PartialState()


def build_meshes_on_cpu() -> None:
    """A device mesh asked for on "cuda" is built on "cpu" (point 2)."""
    from accelerate.parallelism_config import ParallelismConfig

    original = ParallelismConfig.build_device_mesh
    if getattr(original, "_ftkit_cpu", False):
        return

    @functools.wraps(original)
    def build_device_mesh(self: Any, device_type: str) -> Any:
        return original(self, "cpu" if device_type == "cuda" else device_type)

    build_device_mesh._ftkit_cpu = True  # type: ignore[attr-defined]
    ParallelismConfig.build_device_mesh = build_device_mesh  # type: ignore[method-assign]


def allow_fsdp_on_cpu() -> None:
    """A `MULTI_CPU` accelerator state given an FSDP plugin becomes an FSDP state (point 3)."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__
    if getattr(original, "_ftkit_cpu", False):
        return

    plugins: list[Any] = []  # the FSDP plugin of the trainer's accelerator, for states made again later

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None:
            plugins[:] = [fsdp_plugin]
        # The shared state is reset and made again without the plugin (e.g. a copy of the training arguments):
        # on a GPU the ACCELERATE_USE_FSDP environment keeps it FSDP; here the plugin seen first does.
        if plugins and self.distributed_type == DistributedType.MULTI_CPU:
            if self._mixed_precision != "no":
                plugins[0].set_mixed_precision(self._mixed_precision)
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = plugins[0]

    __init__._ftkit_cpu = True  # type: ignore[attr-defined]
    AcceleratorState.__init__ = __init__  # type: ignore[method-assign]


def load_on_cpu() -> None:
    """Axolotl places a QLoRA + FSDP model on the rank's GPU (`device_map={"": LOCAL_RANK}`): on a machine without
    one, on the CPU (point 4)."""
    from axolotl.loaders.model import ModelLoader

    original = ModelLoader._set_device_map_config
    if getattr(original, "_ftkit_cpu", False):
        return

    @functools.wraps(original)
    def _set_device_map_config(self: Any) -> None:
        original(self)
        device_map = self.model_kwargs.get("device_map")
        if isinstance(device_map, int):
            self.model_kwargs["device_map"] = "cpu"
        elif isinstance(device_map, dict):
            self.model_kwargs["device_map"] = {k: "cpu" if isinstance(v, int) else v for k, v in device_map.items()}

    _set_device_map_config._ftkit_cpu = True  # type: ignore[attr-defined]
    ModelLoader._set_device_map_config = _set_device_map_config  # type: ignore[method-assign]


class CpuDistributedPlugin(BasePlugin):
    def register(self, cfg: Any) -> None:
        # Axolotl registers plugins while it loads the config: before the model, the mesh and the trainer exist.
        if not cpu_ranks():
            return
        gloo_on_cpu()
        build_meshes_on_cpu()
        allow_fsdp_on_cpu()
        load_on_cpu()
        if cfg.get("deepspeed"):
            # ZeRO-3 partitions the weights while the model loads (deepspeed.zero.Init), before the trainer would
            # start DeepSpeed's communication: it joins the gloo group now, or it sees a world of one process.
            # Its CPU backend would first JIT-compile a shared-memory all-reduce op (g++, a minute on 2 cores, a
            # lock under ~/.cache/torch_extensions): an optimisation only, gloo carries the same collectives.
            import deepspeed
            import deepspeed.ops

            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
            deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
        import torch.distributed as dist

        print(f"ftkit: rank {dist.get_rank()} of {dist.get_world_size()} on the CPU, torch.distributed backend "
              f"{dist.get_backend()}", flush=True)  # fmt: skip
