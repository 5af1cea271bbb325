"""The container image a recipe names, as a pull reference."""

from __future__ import annotations

from ftkit.recipes.schema import ContainerRef

ENTRYPOINT = ["python", "-m", "ftkit.cloud.entrypoint"]


def image_ref(container: ContainerRef) -> str:
    """image:tag@digest when the recipe pins a digest (the pull then gets exactly that image), else image:tag."""
    ref = f"{container.image}:{container.tag}"
    return f"{ref}@{container.digest}" if container.digest else ref
