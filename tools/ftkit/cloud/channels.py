"""SageMaker input channels -> the stages' dataset paths.

A channel is named after the stage it feeds (`fit({"sft": "s3://…/sft/", "dpo": "s3://…/dpo/"})`); SageMaker copies
it to `/opt/ml/input/data/<stage>/`. Each of the stage's datasets is matched to the file of the same name in the
channel, or, for a stage with one dataset, to the channel's only file. The result is `--set` overrides built by the
engine adapter (`Engine.local_dataset_keys`: the dataset entry's path, and `split: train` where it names a split),
so they pass the same checks as any `--set`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftkit.dotted_keys import parse_set
from ftkit.engines import get_engine
from ftkit.errors import FtkitError
from ftkit.recipes.load import LoadedRecipe
from ftkit.recipes.resolve import resolve_stage, route_sets


def input_channels(data_dir: Path) -> dict[str, Path]:
    """Channel name -> its directory under /opt/ml/input/data."""
    if not data_dir.is_dir():
        return {}
    return {p.name: p for p in sorted(data_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def channel_files(channel: Path) -> list[Path]:
    """The data files SageMaker copied into a channel (hidden files and folders left out)."""
    files = (p for p in channel.rglob("*") if p.is_file())
    return sorted(p for p in files if not any(part.startswith(".") for part in p.relative_to(channel).parts))


def channel_sets(loaded: LoadedRecipe, profile: str, sets: list[str], channels: dict[str, Path]) -> list[str]:
    """`STAGE.KEY=VALUE` items pointing every channel's stage at the channel's files."""
    engine = get_engine(loaded.recipe.engine)
    stage_names = [s.name for s in loaded.recipe.stages]
    routed = route_sets(parse_set(sets), stage_names, recipe=loaded)
    out: list[str] = []
    for channel, directory in channels.items():
        if channel not in stage_names:
            raise FtkitError.one(
                f"input channel '{channel}' is not a stage of {loaded.name}",
                file=directory,
                field=channel,
                fix=f"name each channel after the stage whose data it holds: {', '.join(stage_names)}",
            )
        config = resolve_stage(loaded, channel, profile, routed).config
        files = channel_files(directory)
        if not files:
            raise FtkitError.one(
                f"input channel '{channel}' is empty",
                file=directory,
                field=channel,
                fix="check the S3 prefix given to fit() for this channel",
            )
        wanted = engine.dataset_paths(config)
        for index, path in enumerate(wanted):
            same_name = [f for f in files if f.name == Path(path).name]
            only = files if len(wanted) == 1 and len(files) == 1 else []
            chosen = (same_name or only or [None])[0]
            if chosen is None:
                raise FtkitError.one(
                    f"input channel '{channel}': none of {[f.name for f in files]} is dataset {index} of stage "
                    f"'{channel}' ({path})",
                    file=directory,
                    field=channel,
                    fix=f"name the file {Path(path).name}, or give the stage one file",
                )
            for key, value in engine.local_dataset_keys(config, str(chosen), index).items():
                out.append(f"{channel}.{key}={json.dumps(value)}")
    return out
