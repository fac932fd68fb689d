"""The ``pio`` command line, through typer's runner and as real subprocesses, on a tiny checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from inference_pio.cli import app, main
from tests.server.chat_checkpoint import write_chat_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_chat_checkpoint(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def local_model(checkpoint):
    import inference_pio

    model = inference_pio.load(checkpoint, dtype="float32", max_seq_len=256)
    yield model
    model.close()


def test_generate_streams_the_greedy_text_and_a_summary(checkpoint, local_model, capfd):
    [expected] = local_model.generate("Hello world", max_tokens=8, temperature=0)
    code = main(["generate", str(checkpoint), "Hello world", "-n", "8", "-t", "0", "--dtype", "float32",
                 "--max-seq-len", "256"])
    out, err = capfd.readouterr()
    assert code == 0
    assert out == expected.text + "\n"
    assert f"{len(expected.token_ids)} tokens" in err and "tok/s" in err


def test_generate_chat_uses_the_template(checkpoint, local_model, capfd):
    ids = local_model.apply_chat_template([{"role": "user", "content": "Hi"}])
    [expected] = local_model.generate([ids], max_tokens=6, temperature=0)
    assert main(["generate", str(checkpoint), "Hi", "--chat", "-n", "6", "-t", "0", "--max-seq-len", "256"]) == 0
    assert capfd.readouterr().out == expected.text + "\n"


def test_chat_session_keeps_history(checkpoint, local_model):
    result = runner.invoke(app, ["chat", str(checkpoint), "-n", "4", "-t", "0", "--max-seq-len", "256"],
                           input="Hello\nAgain\n/exit\n")
    assert result.exit_code == 0, result.output
    first_ids = local_model.apply_chat_template([{"role": "user", "content": "Hello"}])
    [first] = local_model.generate([first_ids], max_tokens=4, temperature=0)
    second_ids = local_model.apply_chat_template([{"role": "user", "content": "Hello"},
                                                  {"role": "assistant", "content": first.text},
                                                  {"role": "user", "content": "Again"}])
    [second] = local_model.generate([second_ids], max_tokens=4, temperature=0)
    assert first.text in result.output and second.text in result.output


def test_plugins_list_and_show():
    result = runner.invoke(app, ["plugins", "list"])
    assert result.exit_code == 0 and "Llama" in result.output
    shown = runner.invoke(app, ["plugins", "show", "llama"])
    assert shown.exit_code == 0 and '"model_types"' in shown.output


def test_bench_reports_both_rates(checkpoint):
    result = runner.invoke(app, ["bench", str(checkpoint), "--prompt-tokens", "16", "--new-tokens", "4",
                                 "--repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "inference-pio" in result.output and "decode tok/s" in result.output


def test_errors_are_one_line_with_nonzero_exit(tmp_path, capfd):
    assert main(["plugins", "show", "no-such-plugin"]) == 1
    err = capfd.readouterr().err
    assert err.startswith("error: ") and "no-such-plugin" in err and "Traceback" not in err
    assert main(["generate", "a", "b", "c"]) != 0
    assert main(["generate", str(tmp_path / "missing.gguf"), "hi"]) == 1
    err = capfd.readouterr().err
    assert "missing.gguf" in err and "Traceback" not in err


def test_debug_shows_the_traceback(capfd):
    with pytest.raises(Exception, match="no-such-plugin"):
        main(["--debug", "plugins", "show", "no-such-plugin"])


def test_real_subprocess(checkpoint):
    ok = subprocess.run([sys.executable, "-m", "inference_pio", "generate", str(checkpoint), "Hello", "-n", "3",
                         "-t", "0", "--max-seq-len", "64"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "tok/s" in ok.stderr
    bad = subprocess.run([sys.executable, "-m", "inference_pio", "plugins", "show", "nope"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
