"""`ftkit serve-cmd` prints copy-pastable commands; `ftkit serve` serves a run's merged model (transformers serve)
and answers an OpenAI chat completion that ends at the end-of-turn token, then stops cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ftkit.cli import main
from ftkit.errors import ExitCode, FtkitError
from ftkit.export import serve_local
from ftkit.export.serve import serve_commands, serve_target
from ftkit.export.serve_local import check_port_free, check_serve_packages, serve_plan
from tinymodel import build_tiny_llama

QUESTION = "What is the capital of France?"
ANSWER = "Paris"


def _model_dir(path: Path) -> Path:
    """Enough of a model dir for planning (no weights are loaded)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


def _run_dir(tmp_path: Path, stages: dict[str, dict[str, str]]) -> Path:
    run = tmp_path / "runs" / "demo" / "20261207-000000-smoke"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"recipe": "demo", "stages": stages}))
    return run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ serve-cmd


def test_serve_cmd_prints_each_command_unwrapped_under_a_header_line(tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    model = _model_dir(tmp_path / ("a-very-long-folder-name-" * 4) / ("another-long-one-" * 4) / "merged-model")
    assert main(["serve-cmd", str(model)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = serve_commands(serve_target(model))
    vllm = next(c["command"] for c in expected if c["server"] == "vllm")
    assert len(vllm) > 200 and str(model) in vllm  # longer than any console width: a wrapped line would break it
    for c in expected:  # each command whole on the line after its header
        i = lines.index(f"# {c['server']}: {c['what']}")
        assert lines[i + 1] == c["command"]
    assert [ln for ln in lines if ln and not ln.startswith("# ")] == [c["command"] for c in expected]


# ------------------------------------------------------------------ serve: refusals before anything starts


def test_serve_refuses_a_run_stage_without_a_merged_model_and_names_the_merge_command(tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    run = _run_dir(tmp_path, {"sft": {"adapter_dir": str(tmp_path / "adapter")}})
    assert main(["serve", str(run)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "stages.sft.merged_dir" in err and f"ftkit export merge {run} --stage sft --out MERGED_DIR" in err
    assert "merge: true" in err


def test_serve_refuses_an_adapter_dir_and_a_stage_whose_merged_model_is_gone(tmp_path: Path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(FtkitError, match="adapter alone") as exc:
        serve_plan(adapter)
    assert f"ftkit export merge {adapter} --out MERGED_DIR" in str(exc.value)
    run = _run_dir(tmp_path, {"sft": {"merged_dir": str(tmp_path / "deleted")}})
    with pytest.raises(FtkitError, match="lost its merged model"):
        serve_plan(run)


def test_serve_plan_picks_the_stage_and_prints_a_curl_that_names_the_served_model(tmp_path: Path):
    sft, dpo = _model_dir(tmp_path / "sft-merged"), _model_dir(tmp_path / "dpo-merged")
    run = _run_dir(tmp_path, {"sft": {"merged_dir": str(sft)}, "dpo": {"merged_dir": str(dpo)}})
    assert serve_plan(run).model_dir == dpo.resolve()  # the last stage by default
    plan = serve_plan(run, stage="sft", port=8123)
    assert plan.model_dir == sft.resolve() and plan.source == f"stage 'sft' of {run}" and plan.loopback_only
    words = shlex.split(plan.curl_example())
    assert words[2] == "http://127.0.0.1:8123/v1/chat/completions"
    assert json.loads(words[words.index("-d") + 1])["model"] == plan.model_name == str(sft.resolve())
    assert plan.argv("python")[:5] == ["python", "-m", "transformers.cli.transformers", "serve", str(sft.resolve())]
    assert serve_plan(run, host="::", port=9).url == "http://[::1]:9"
    assert not serve_plan(run, host="0.0.0.0").loopback_only
    with pytest.raises(FtkitError, match="no stage 'rm'"):
        serve_plan(run, stage="rm")


def test_serve_names_a_missing_serving_package_with_exit_5(tmp_path: Path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    with pytest.raises(FtkitError) as exc:
        check_serve_packages(find_spec=lambda name: None if name == "openai" else object())
    assert exc.value.code == ExitCode.ENVIRONMENT and "needs openai" in str(exc.value)
    monkeypatch.setattr(serve_local, "missing_serve_packages", lambda *_: ["openai"])  # the CLI's wiring
    assert main(["serve", str(_model_dir(tmp_path / "m")), "--port", str(_free_port())]) == ExitCode.ENVIRONMENT
    assert "pip install 'openai>=1.98,<3'" in capsys.readouterr().err


def test_serve_refuses_a_port_something_listens_on():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(FtkitError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again once closed


# ------------------------------------------------------------------ serve: end to end


@pytest.fixture(scope="module")
def answering_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama trained (a few seconds) to answer QUESTION with ANSWER and then its end-of-turn token, so that
    a server that applies the chat template and stops at EOS returns exactly ANSWER with finish_reason "stop"."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = build_tiny_llama(tmp_path_factory.mktemp("serve") / "merged")
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(prompt + ANSWER + tok.eos_token, return_tensors="pt", add_special_tokens=False).input_ids
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    prompt_ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    generated = model.generate(prompt_ids, max_new_tokens=8, do_sample=False)[0, prompt_ids.shape[1] :]
    assert tok.decode(generated) == ANSWER + tok.eos_token  # the fixture itself works; the server is tested below
    model.save_pretrained(out, safe_serialization=True)
    return out


def _wait_for_line(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text())
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"ftkit serve exited with {proc.returncode} before it was ready")
        time.sleep(0.25)
    pytest.fail(f"ftkit serve was not ready within {timeout:.0f} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").is_file() or Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.slow
def test_serve_answers_a_chat_completion_that_ends_at_eos_then_stops_on_sigterm(answering_model: Path, tmp_path: Path):
    run = _run_dir(tmp_path, {"sft": {"merged_dir": str(answering_model)}})
    port = _free_port()
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    cmd = [sys.executable, "-m", "ftkit", "serve", str(run), "--port", str(port), "--device", "cpu"]
    with out.open("wb") as out_f, err.open("wb") as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, start_new_session=True)
    server_pid = None
    try:
        ready = _wait_for_line(out, r"server pid (\d+)[\s\S]*try it:\n(.+)\n", proc, timeout=120)
        server_pid = int(ready.group(1))
        printed = out.read_text()
        url = re.search(r"url: +(\S+)", printed).group(1)  # type: ignore[union-attr]
        name = re.search(r"model name: (.+)", printed).group(1)  # type: ignore[union-attr]
        assert url == f"http://127.0.0.1:{port}" and name == str(answering_model.resolve())
        assert shlex.split(ready.group(2))[2] == f"{url}/v1/chat/completions"

        body = {"model": name, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8, "temperature": 0}
        request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})  # fmt: skip
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        with direct.open(request, timeout=60) as resp:
            answer = json.loads(resp.read())
        choice = answer["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == (ANSWER, "stop"), answer
        assert answer["usage"]["completion_tokens"] < body["max_tokens"]  # it stopped at EOS, not at the limit

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, err.read_text()[-2000:]
        assert "stopped on SIGTERM: it shut down cleanly" in err.read_text()
        assert not _alive(server_pid)
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # nothing listens any more
    finally:  # never leave a server behind, whatever failed above
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if server_pid is not None and _alive(server_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(server_pid, signal.SIGKILL)
