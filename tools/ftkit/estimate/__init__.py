"""VRAM, time and cost of a training setting or a recipe, before it runs (offline catalogs)."""
