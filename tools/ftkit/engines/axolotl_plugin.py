"""An Axolotl plugin the runner adds to CPU runs of 4-bit configs (see `ftkit.engines.bnb_cpu`).

Named in the resolved config as `plugins: [ftkit.engines.axolotl_plugin.Cpu4bitTrainingPlugin]`;
imported only inside the Axolotl training process.
"""

from __future__ import annotations

import logging
from typing import Any

from axolotl.integrations.base import BasePlugin

from ftkit.engines.bnb_cpu import keep_4bit_layers_trainable

LOG = logging.getLogger(__name__)


class Cpu4bitTrainingPlugin(BasePlugin):
    def post_model_load(self, cfg: Any, model: Any) -> None:
        n = keep_4bit_layers_trainable(model)
        LOG.info("ftkit: CPU weight repacking off on %d bitsandbytes 4-bit layers (keeps them trainable)", n)
