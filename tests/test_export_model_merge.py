"""Merging several models with mergekit (ftkit.export.model_merge): each method's arithmetic, checked on tiny Llamas.

The inputs share the tokenizer of the session's tiny Llama ("base", seed 0): "sft" and "dpo" are the base
plus small deltas with one shared sign pattern (no sign conflict), "rival" is the base plus a delta of
random signs, and "other" is an independent tiny Llama (seed 1). Configs are written beside the models
with relative paths, so they only resolve relative to the config file's folder.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from ftkit.errors import FtkitError
from ftkit.export.model_merge import (
    PROVENANCE_FILE,
    merge_models,
    read_merge_config,
    resolve_merge_config,
)
from safetensors.torch import load_file, save_file
from tinymodel import build_tiny_llama

EXAMPLE = ROOT / "tools" / "ftkit" / "export" / "examples" / "ties.mergekit.yaml"
Tensors = dict[str, torch.Tensor]


def tensors(model_dir: Path) -> Tensors:
    return load_file(str(model_dir / "model.safetensors"))


def variant(base: Path, out: Path, change: Callable[[str, torch.Tensor], torch.Tensor]) -> Path:
    """A copy of `base` (tokenizer and config included) with every tensor replaced by change(name, tensor)."""
    shutil.copytree(base, out)
    new = {name: change(name, t).contiguous() for name, t in tensors(base).items()}
    save_file(new, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def seeded(name: str, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{name}:{salt}".encode()))


@pytest.fixture(scope="module")
def zoo(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """base, sft, dpo, rival and other, side by side in one folder."""
    root = tmp_path_factory.mktemp("merge-zoo")
    base = shutil.copytree(tiny_llama, root / "base")

    def sign(name: str, t: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, 2, t.shape, generator=seeded(name, 0)).float() * 2 - 1

    def delta(scale: float, salt: int) -> Callable[[str, torch.Tensor], torch.Tensor]:
        # |delta| >= scale/2 everywhere: far above the float32 spacing of the base's values (<= 1.0)
        def change(name: str, t: torch.Tensor) -> torch.Tensor:
            size = 0.5 + torch.rand(t.shape, generator=seeded(name, salt))
            return t + scale * size * sign(name, t)

        return change

    variant(base, root / "sft", delta(0.01, 1))
    variant(base, root / "dpo", delta(0.02, 2))
    variant(base, root / "rival", lambda n, t: t + 0.015 * torch.randn(t.shape, generator=seeded(n, 3)))
    build_tiny_llama(root / "other", seed=1)
    return root


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def merged_tensors(out: Path, expected: Tensors) -> Tensors:
    """The merged model loaded with transformers (so it must load), as float32 tensors by name."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    state = model.state_dict()
    assert set(expected) <= set(state)
    return {name: state[name] for name in expected}


def assert_all_close(got: Tensors, want: Tensors, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=atol, rtol=rtol, msg=name)


# --- linear ---------------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize("normalize", [True, False])
def test_linear_is_the_weighted_sum_divided_by_the_weights_when_normalized(zoo: Path, tmp_path: Path, normalize: bool):
    cfg = write(
        zoo,
        f"linear-{normalize}.yaml",
        f"""merge_method: linear
dtype: float32
parameters: {{normalize: {str(normalize).lower()}}}
models:
  - {{model: base, parameters: {{weight: 2.0}}}}
  - {{model: sft, parameters: {{weight: 1.0}}}}
  - {{model: ./dpo, parameters: {{weight: 1.0}}}}
""",
    )
    result = merge_models(cfg, tmp_path / "out")
    b, s, d = tensors(zoo / "base"), tensors(zoo / "sft"), tensors(zoo / "dpo")
    total = 4.0 if normalize else 1.0
    want = {k: (2 * b[k] + s[k] + d[k]) / total for k in b}
    assert_all_close(merged_tensors(result.out_dir, want), want)
    assert result.method == "linear"
    assert result.base_model is None
    assert result.models == tuple(str((zoo / m).resolve()) for m in ("base", "sft", "dpo"))
    assert result.parameters == sum(t.numel() for t in b.values())
    assert result.seconds > 0


@pytest.mark.model
def test_the_output_has_the_tokenizer_and_a_provenance_file(zoo: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    text = "merge_method: linear\nmodels:\n  - {model: sft, parameters: {weight: 1}}\n"
    text += "  - {model: dpo, parameters: {weight: 1}}\n"
    cfg = write(zoo, "linear-provenance.yaml", text)
    result = merge_models(cfg, tmp_path / "out")
    tok, base_tok = AutoTokenizer.from_pretrained(result.out_dir), AutoTokenizer.from_pretrained(zoo / "base")
    assert tok.get_vocab() == base_tok.get_vocab()
    assert tok.chat_template == base_tok.chat_template
    assert tok.eos_token == base_tok.eos_token
    record = json.loads((result.out_dir / PROVENANCE_FILE).read_text())
    assert record["config_text"] == text
    assert record["config_file"] == str(cfg.resolve())
    assert record["models"] == [str((zoo / "sft").resolve()), str((zoo / "dpo").resolve())]
    assert record["versions"]["mergekit"] == result.mergekit_version == "0.1.5"
    assert record["parameters"] == result.parameters
    assert str((zoo / "sft").resolve()) in record["resolved_config"]  # absolute paths: reproducible from here
    assert result.to_dict()["out_dir"] == str(result.out_dir)


# --- SLERP ----------------------------------------------------------------------------------------


def slerp_config(zoo: Path, t: float) -> Path:
    return write(
        zoo,
        f"slerp-{t}.yaml",
        f"merge_method: slerp\ndtype: float32\nbase_model: base\nparameters: {{t: {t}}}\n"
        "models:\n  - model: base\n  - model: other\n",
    )


@pytest.mark.model
@pytest.mark.parametrize(("t", "equals"), [(0.0, "base"), (1.0, "other")])
def test_slerp_at_t_0_is_the_base_and_at_t_1_the_other_model(zoo: Path, tmp_path: Path, t: float, equals: str):
    result = merge_models(slerp_config(zoo, t), tmp_path / "out")
    want = tensors(zoo / equals)
    assert_all_close(merged_tensors(result.out_dir, want), want)


@pytest.mark.model
def test_slerp_halfway_follows_the_arc_and_keeps_the_norm_that_lerp_loses(zoo: Path, tmp_path: Path):
    result = merge_models(slerp_config(zoo, 0.5), tmp_path / "out")
    a, b = tensors(zoo / "base"), tensors(zoo / "other")
    got = merged_tensors(result.out_dir, a)
    arcs = 0
    for name in a:
        x, y = a[name].double().flatten(), b[name].double().flatten()
        if torch.equal(x, y):  # the RMSNorm weights (all ones in both): nothing to interpolate
            torch.testing.assert_close(got[name], a[name])
            continue
        # slerp over the whole flattened tensor: the angle between the two directions, split in half
        theta = torch.arccos(torch.dot(x / x.norm(), y / y.norm()).clamp(-1, 1))
        want = (torch.sin(theta / 2) * x + torch.sin(theta / 2) * y) / torch.sin(theta)
        g = got[name].double().flatten()
        torch.testing.assert_close(g, want, atol=1e-6, rtol=1e-5, msg=name)
        assert not torch.allclose(g, x) and not torch.allclose(g, y)
        # independent random tensors are near-orthogonal: lerp's midpoint shrinks by ~1/sqrt(2), slerp's does not
        assert g.norm() >= 0.99 * min(x.norm(), y.norm()), name
        assert g.norm() > 1.3 * ((x + y) / 2).norm(), name
        arcs += 1
    assert arcs == 15  # every 2-D weight: the embeddings and 7 projections in each of 2 layers


# --- TIES -----------------------------------------------------------------------------------------


def ties_reference(base: Tensors, models: list[Tensors], weights: list[float], density: float) -> Tensors:
    """TIES (arXiv 2306.01708) per tensor: trim each delta to its `density` largest magnitudes, elect each
    entry's sign from the sum of the weighted deltas, then average (weighted) the deltas that agree."""
    out = {}
    for name, b in base.items():
        trimmed = []
        for m, w in zip(models, weights, strict=True):
            d = (m[name] - b).flatten()
            keep = torch.zeros_like(d)
            keep[torch.topk(d.abs(), int(density * d.numel())).indices] = 1
            trimmed.append(w * d * keep)
        stack = torch.stack(trimmed)
        elected = torch.where(stack.sum(0) >= 0, 1.0, -1.0)
        agree = stack.sign() == elected
        weight_sum = (torch.tensor(weights).unsqueeze(1) * agree).sum(0)
        mixed = (stack * agree).sum(0) / torch.where(weight_sum == 0, 1.0, weight_sum)
        out[name] = b + mixed.reshape(b.shape)
    return out


@pytest.mark.model
@pytest.mark.parametrize("normalize", [True, False])
def test_ties_with_density_1_and_no_sign_conflict_adds_the_weighted_deltas(zoo: Path, tmp_path: Path, normalize: bool):
    cfg = write(
        zoo,
        f"ties-dense-{normalize}.yaml",
        f"""merge_method: ties
dtype: float32
base_model: base
parameters: {{normalize: {str(normalize).lower()}}}
models:
  - {{model: sft, parameters: {{weight: 1.0, density: 1.0}}}}
  - {{model: dpo, parameters: {{weight: 0.5, density: 1.0}}}}
""",
    )
    result = merge_models(cfg, tmp_path / "out")
    b, s, d = tensors(zoo / "base"), tensors(zoo / "sft"), tensors(zoo / "dpo")
    divisor = 1.5 if normalize else 1.0  # normalize: the weighted mean of the deltas, else their weighted sum
    want = {k: b[k] + (1.0 * (s[k] - b[k]) + 0.5 * (d[k] - b[k])) / divisor for k in b}
    assert_all_close(merged_tensors(result.out_dir, want), want)
    assert result.base_model == str((zoo / "base").resolve())
    assert result.models == (str((zoo / "sft").resolve()), str((zoo / "dpo").resolve()))


@pytest.mark.model
def test_ties_trims_small_deltas_and_drops_the_ones_against_the_elected_sign(zoo: Path, tmp_path: Path):
    cfg = write(
        zoo,
        "ties-sparse.yaml",
        """merge_method: ties
dtype: float32
base_model: base
models:
  - {model: sft, parameters: {weight: 1.0, density: 0.5}}
  - {model: rival, parameters: {weight: 0.8, density: 0.5}}
""",
    )
    result = merge_models(cfg, tmp_path / "out")
    b, s, r = tensors(zoo / "base"), tensors(zoo / "sft"), tensors(zoo / "rival")
    want = ties_reference(b, [s, r], [1.0, 0.8], density=0.5)
    got = merged_tensors(result.out_dir, want)
    assert_all_close(got, want)
    plain_mean = {k: b[k] + (1.0 * (s[k] - b[k]) + 0.8 * (r[k] - b[k])) / 1.8 for k in b}
    assert not torch.allclose(got["model.layers.0.mlp.up_proj.weight"], plain_mean["model.layers.0.mlp.up_proj.weight"])


# --- DARE -----------------------------------------------------------------------------------------


def dare_config(zoo: Path, name: str, method: str, models: list[str], density: float) -> Path:
    entries = "".join(f"  - {{model: {m}, parameters: {{weight: 1.0, density: {density}}}}}\n" for m in models)
    return write(zoo, name, f"merge_method: {method}\ndtype: float32\nbase_model: base\nmodels:\n{entries}")


@pytest.mark.model
def test_dare_keeps_a_density_share_of_the_delta_and_rescales_it_to_the_same_l1_norm(zoo: Path, tmp_path: Path):
    result = merge_models(dare_config(zoo, "dare-linear.yaml", "dare_linear", ["sft"], 0.3), tmp_path / "out")
    b, s = tensors(zoo / "base"), tensors(zoo / "sft")
    got = merged_tensors(result.out_dir, b)
    kept_total = entries = 0
    factors = []
    for name in b:
        delta, moved = s[name] - b[name], got[name] - b[name]
        kept = moved != 0
        assert torch.equal(got[name][~kept], b[name][~kept]), name  # a dropped entry is the base's value
        ratio = moved[kept] / delta[kept]  # a kept entry is its delta times one factor per tensor
        torch.testing.assert_close(ratio, torch.full_like(ratio, ratio.mean().item()), rtol=1e-4, atol=0, msg=name)
        # mergekit rescales the kept entries so the delta's L1 norm is unchanged (rescale: true, DARE's default)
        torch.testing.assert_close(moved.abs().sum(), delta.abs().sum(), rtol=1e-4, atol=0, msg=name)
        kept_total += int(kept.sum())
        entries += kept.numel()
        if kept.numel() >= 4096:
            factors.append(ratio.mean().item())
    assert kept_total / entries == pytest.approx(0.3, abs=0.02)  # Bernoulli(0.3) over ~100 k entries
    assert sum(factors) / len(factors) == pytest.approx(1 / 0.3, rel=0.05)  # ~ 1/density, as in the paper
    assert not torch.equal(got["model.embed_tokens.weight"], s["model.embed_tokens.weight"])


@pytest.mark.model
def test_dare_ties_is_random_but_reproducible_with_its_seed(zoo: Path, tmp_path: Path):
    cfg = dare_config(zoo, "dare-ties.yaml", "dare_ties", ["sft", "dpo"], 0.5)
    runs = {
        "a": merge_models(cfg, tmp_path / "a", random_seed=7),
        "b": merge_models(cfg, tmp_path / "b", random_seed=7),
        "c": merge_models(cfg, tmp_path / "c", random_seed=8),
    }
    got = {k: tensors(r.out_dir) for k, r in runs.items()}
    b, s, d = tensors(zoo / "base"), tensors(zoo / "sft"), tensors(zoo / "dpo")
    name = "model.layers.1.mlp.gate_proj.weight"
    assert all(torch.equal(got["a"][k], got["b"][k]) for k in b)
    assert not torch.equal(got["a"][name], got["c"][name])
    for other in (b, s, d):
        assert not torch.allclose(got["a"][name], other[name])
    # each delta survives with probability 0.5, so an entry stays at the base value with probability 0.25
    unchanged = sum(int((got["a"][k] == b[k]).sum()) for k in b) / sum(t.numel() for t in b.values())
    assert unchanged == pytest.approx(0.25, abs=0.02)
    merged_tensors(runs["a"].out_dir, b)  # loads with transformers


# --- LoRA adapters as inputs ----------------------------------------------------------------------


@pytest.mark.model
def test_a_model_plus_adapter_reference_merges_the_lora_first(zoo: Path, tmp_path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(zoo / "base", dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(zoo / "adapter")
    cfg = write(
        zoo,
        "lora.yaml",
        "merge_method: linear\ndtype: float32\nmodels:\n  - {model: base+adapter, parameters: {weight: 1}}\n",
    )
    result = merge_models(cfg, tmp_path / "out")
    assert result.models == (f"{(zoo / 'base').resolve()}+{(zoo / 'adapter').resolve()}",)
    b = tensors(zoo / "base")
    adapter = load_file(str(zoo / "adapter" / "adapter_model.safetensors"))
    want = dict(b)
    for name in b:
        stem = "base_model.model." + name.removesuffix(".weight")
        if f"{stem}.lora_A.weight" in adapter:
            up, down = adapter[f"{stem}.lora_B.weight"], adapter[f"{stem}.lora_A.weight"]
            want[name] = b[name] + (8 / 4) * up @ down  # W + (alpha / r) B A
    assert sum(not torch.equal(want[k], b[k]) for k in b) == 4  # q_proj and v_proj of 2 layers
    assert_all_close(merged_tensors(result.out_dir, want), want, atol=1e-5)
    assert not list(tmp_path.glob(".out.lora-*"))  # the merged-adapter cache is removed


# --- the example config ---------------------------------------------------------------------------


def test_the_example_config_is_a_valid_ties_merge_configuration():
    from mergekit.config import MergeConfiguration

    config = read_merge_config(EXAMPLE)
    assert isinstance(config, MergeConfiguration)
    assert config.merge_method == "ties"
    assert str(config.base_model) == "base"
    assert [str(m.model) for m in config.models or []] == ["sft/merged", "dpo/merged"]
    assert all(m.parameters and {"weight", "density"} <= set(m.parameters) for m in config.models or [])
    assert config.dtype == "bfloat16"


@pytest.mark.model
def test_the_example_config_merges_a_run_folder_laid_out_as_it_says(zoo: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(zoo / "base", run / "base")
    shutil.copytree(zoo / "sft", run / "sft" / "merged")
    shutil.copytree(zoo / "dpo", run / "dpo" / "merged")
    cfg = Path(shutil.copy(EXAMPLE, run / "merge.mergekit.yaml"))
    result = merge_models(cfg, run / "ties-merged")
    merged = tensors(result.out_dir)
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}
    assert result.parameters == sum(t.numel() for t in tensors(zoo / "base").values())
    assert (result.out_dir / "tokenizer.json").is_file()
    merged_tensors(result.out_dir, merged)


# --- clear errors ---------------------------------------------------------------------------------

BAD_CONFIGS = {
    "unknown method": (
        "merge_method: slerpp\nbase_model: base\nparameters: {t: 0.5}\nmodels:\n  - model: base\n  - model: sft\n",
        "merge_method", 1, "did you mean 'slerp'?",
    ),
    "missing model folder": (
        "merge_method: linear\nmodels:\n  - {model: sft, parameters: {weight: 1}}\n"
        "  - {model: runs/nowhere, parameters: {weight: 1}}\n",
        "models.1.model", 4, "hf download runs/nowhere",
    ),
    "missing local folder": (
        "merge_method: linear\nmodels:\n  - {model: ./gone, parameters: {weight: 1}}\n",
        "models.0.model", 3, "a relative path starts from",
    ),
    "trust_remote_code": (
        "merge_method: linear\ntrust_remote_code: true\nmodels:\n  - {model: sft, parameters: {weight: 1}}\n",
        "trust_remote_code", 2, "remove the key",
    ),
    "typo in a key": (
        "merge_method: linear\ndtyp: bfloat16\nmodels:\n  - {model: sft, parameters: {weight: 1}}\n",
        "dtyp", 2, "did you mean 'dtype'?",
    ),
    "typo in a parameter": (
        "merge_method: ties\nbase_model: base\nmodels:\n  - {model: sft, parameters: {weight: 1, densty: 0.5}}\n",
        "models.0.parameters.densty", 4, "did you mean 'density'?",
    ),
    "wrong parameter type": (
        "merge_method: linear\nmodels:\n  - model: sft\n    parameters: {weight: heavy}\n",
        "models.0.parameters.weight", 4, "write a float",
    ),
    "required parameter missing": (
        "merge_method: slerp\nbase_model: base\nmodels:\n  - model: base\n  - model: sft\n",
        "parameters.t", None, "add 'parameters: {t: ...}'",
    ),
    "ties without a base": (
        "merge_method: ties\nmodels:\n  - {model: sft, parameters: {weight: 1}}\n",
        "base_model", None, "set base_model",
    ),
    "slerp with three models": (
        "merge_method: slerp\nbase_model: base\nparameters: {t: 0.5}\n"
        "models:\n  - model: base\n  - model: sft\n  - model: dpo\n",
        "models", 4, "exactly 2 input model(s)",
    ),
    "models and slices": (
        "merge_method: linear\nmodels:\n  - {model: sft, parameters: {weight: 1}}\n"
        "slices:\n  - sources: [{model: sft, layer_range: [0, 2]}]\n",
        "models", 4, "list the input models under 'models:'",
    ),
    "a revision": (
        "merge_method: linear\nmodels:\n  - {model: sft@main, parameters: {weight: 1}}\n",
        "models.0.model", 3, "without '@'",
    ),
}  # fmt: skip


@pytest.mark.model
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_gives_a_clear_error_naming_file_line_field_and_fix(zoo: Path, tmp_path: Path, case: str):
    text, field, line, fix = BAD_CONFIGS[case]
    cfg = write(zoo, f"bad-{case.replace(' ', '-')}.yaml", text)
    out = tmp_path / "out"
    with pytest.raises(FtkitError) as caught:
        merge_models(cfg, out)
    problems = [p for p in caught.value.problems if p.field == field]
    assert problems, str(caught.value)
    problem = problems[0]
    assert problem.file == str(cfg.resolve())
    assert problem.line == line, str(caught.value)
    assert fix in (problem.fix or ""), str(caught.value)
    assert not out.exists()  # nothing is written before the config and the models check out


@pytest.mark.model
def test_a_missing_model_folder_is_named_with_its_resolved_path(zoo: Path, tmp_path: Path):
    cfg = write(
        zoo,
        "bad-missing-named.yaml",
        "merge_method: linear\nmodels:\n  - {model: ../elsewhere/sft, parameters: {weight: 1}}\n",
    )
    with pytest.raises(FtkitError) as caught:
        resolve_merge_config(cfg)
    assert str((zoo.parent / "elsewhere" / "sft").resolve()) in caught.value.problems[0].message


@pytest.mark.model
def test_models_with_different_vocabularies_need_a_tokenizer_setting(zoo: Path, tmp_path: Path):
    other_vocab = shutil.copytree(zoo / "sft", tmp_path / "zoo" / "retok")
    tok = json.loads((other_vocab / "tokenizer.json").read_text())
    first, second = list(tok["model"]["vocab"])[:2]
    tok["model"]["vocab"][first], tok["model"]["vocab"][second] = (
        tok["model"]["vocab"][second],
        tok["model"]["vocab"][first],
    )
    (other_vocab / "tokenizer.json").write_text(json.dumps(tok))
    shutil.copytree(zoo / "base", tmp_path / "zoo" / "base")
    text = "merge_method: ties\nbase_model: base\nmodels:\n  - {model: retok, parameters: {weight: 1}}\n"
    cfg = write(tmp_path / "zoo", "retok.yaml", text)
    with pytest.raises(FtkitError) as caught:
        resolve_merge_config(cfg)
    assert caught.value.problems[0].field == "tokenizer"
    assert "tokenizer: {source: base}" in (caught.value.problems[0].fix or "")
    resolve_merge_config(write(tmp_path / "zoo", "retok-ok.yaml", text + "tokenizer: {source: base}\n"))


@pytest.mark.model
def test_the_output_folder_must_be_empty_unless_it_is_an_earlier_merge_to_overwrite(zoo: Path, tmp_path: Path):
    cfg = write(zoo, "linear-out.yaml", "merge_method: linear\nmodels:\n  - {model: sft, parameters: {weight: 1}}\n")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FtkitError, match="not empty"):
        merge_models(cfg, tmp_path / "busy", overwrite=True)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    first = merge_models(cfg, tmp_path / "out")
    with pytest.raises(FtkitError) as caught:
        merge_models(cfg, tmp_path / "out")
    assert "overwrite=True" in (caught.value.problems[0].fix or "")
    assert merge_models(cfg, tmp_path / "out", overwrite=True).parameters == first.parameters


@pytest.mark.model
def test_a_failure_inside_mergekit_becomes_a_clear_error_and_leaves_no_output(zoo: Path, tmp_path: Path):
    def narrow(name: str, t: torch.Tensor) -> torch.Tensor:  # intermediate_size 128 -> 96
        if name.endswith(("gate_proj.weight", "up_proj.weight")):
            return t[:96]
        return t[:, :96] if name.endswith("down_proj.weight") else t

    narrow_dir = variant(zoo / "base", tmp_path / "zoo" / "narrow", narrow)
    config = json.loads((narrow_dir / "config.json").read_text())
    (narrow_dir / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    shutil.copytree(zoo / "base", tmp_path / "zoo" / "base")
    text = "merge_method: linear\nmodels:\n  - {model: base, parameters: {weight: 1}}\n"
    cfg = write(tmp_path / "zoo", "narrow.yaml", text + "  - {model: narrow, parameters: {weight: 1}}\n")
    with pytest.raises(FtkitError) as caught:
        merge_models(cfg, tmp_path / "out")
    problem = caught.value.problems[0]
    assert "mergekit failed" in problem.message and "size mismatch" in problem.message
    assert "merge only models of the same size" in (problem.fix or "")
    assert problem.file == str(cfg.resolve())
    assert not (tmp_path / "out").exists()
