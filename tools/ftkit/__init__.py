"""ftkit: the finetune-recipes toolkit (recipe runner, data checks, metrics gate)."""

__version__ = "0.1.0"
