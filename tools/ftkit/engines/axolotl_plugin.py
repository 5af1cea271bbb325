"""Axolotl plugins the runner adds to the resolved config (imported only inside the Axolotl training process).

* `RunControlPlugin` (every run): the history log and the clean stop on SIGTERM of `ftkit.engines.trainer_callbacks`,
  the same callbacks the TRL engine uses, and seeded initialisation (reproducible runs): a new head created at load
  (a reward model's `score`) and the LoRA weights.
  `plugins: [ftkit.engines.axolotl_plugin.RunControlPlugin]`.
* `Cpu4bitTrainingPlugin` (CPU runs of 4-bit configs, see `ftkit.engines.bnb_cpu`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from axolotl.integrations.base import BasePlugin

from ftkit.engines.base import HISTORY_ENV
from ftkit.engines.bnb_cpu import keep_4bit_layers_trainable
from ftkit.engines.forward_sigterm import StopRequest

LOG = logging.getLogger(__name__)


class Cpu4bitTrainingPlugin(BasePlugin):
    def post_model_load(self, cfg: Any, model: Any) -> None:
        n = keep_4bit_layers_trainable(model)
        LOG.info("ftkit: CPU weight repacking off on %d bitsandbytes 4-bit layers (keeps them trainable)", n)


class RunControlPlugin(BasePlugin):
    """History to `$FTKIT_HISTORY_FILE`; SIGTERM -> checkpoint at the step end -> exit code 6 (before Axolotl saves
    the final model). Does nothing where the runner did not set `$FTKIT_HISTORY_FILE`."""

    def __init__(self) -> None:
        super().__init__()
        self.flag = StopRequest()
        self.stop: Any = None

    def register(self, cfg: Any) -> None:
        # Axolotl registers plugins while it loads the config: the earliest hook, before the model loads.
        if os.environ.get(HISTORY_ENV):
            self.flag.install("saving a checkpoint at the end of this step, then stopping")

    def pre_model_load(self, cfg: Any) -> None:
        # Axolotl builds the model before the HF Trainer seeds the RNGs: a head the checkpoint lacks (a reward
        # model's `score`, reported MISSING) is initialised here, from an unseeded RNG unless seeded first.
        self._seed(cfg)

    def pre_lora_load(self, cfg: Any, model: Any) -> None:
        # Seeded again before the adapter is attached, so the LoRA init does not depend on what loading drew
        # (the TRL engine seeds at the same point).
        self._seed(cfg)

    @staticmethod
    def _seed(cfg: Any) -> None:
        if os.environ.get(HISTORY_ENV):
            from transformers import set_seed

            set_seed(cfg.seed if cfg.seed is not None else 42)  # 42: TrainingArguments' default seed

    def add_callbacks_pre_trainer(self, cfg: Any, model: Any) -> list[Any]:
        history = os.environ.get(HISTORY_ENV)
        if not history:
            return []
        from ftkit.engines.trainer_callbacks import callbacks

        history_log, self.stop = callbacks(Path(history), self.flag)
        return [history_log, self.stop]

    def post_train(self, cfg: Any, model: Any) -> None:
        # Axolotl calls this right after trainer.train() returns (and again at the very end).
        if self.stop is not None:
            from ftkit.engines.trainer_callbacks import exit_if_stopped

            exit_if_stopped(self.stop)
