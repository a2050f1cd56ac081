"""``lockstep inspect`` and ``lockstep golden``: their output, and one clear line for every user error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from golden.checkpoint import demo_model_path, save_checkpoint
from golden.model import ModelConfig, init_weights
from golden.quantize import weight_bytes
from golden.tokenizer import CharTokenizer
from sim.cli.model import DIVERGENCE_NOTE, golden_cmd, inspect_cmd


@click.group()
def lockstep():
    """A local group: sim/cli/commands.py registers the same commands on the real one."""


lockstep.add_command(inspect_cmd)
lockstep.add_command(golden_cmd)


def invoke(*args):
    return CliRunner().invoke(lockstep, [str(a) for a in args])


def ok_json(*args):
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_error(result, message):
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockstep: error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A GPT-2 checkpoint with a character tokenizer and a Llama one without a tokenizer."""
    root = tmp_path_factory.mktemp("ckpt")
    gpt2 = ModelConfig(family="gpt2", vocab_size=12, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2,
                       head_dim=8, d_ff=32, max_context=24, tie_embeddings=True)
    llama = ModelConfig(family="llama", vocab_size=10, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                        head_dim=8, d_ff=24, max_context=16)
    save_checkpoint(root / "gpt2", gpt2, init_weights(gpt2, seed=0, std=0.3),
                    CharTokenizer("abcdefgh ."))
    save_checkpoint(root / "llama", llama, init_weights(llama, seed=1, std=0.3))
    return root / "gpt2", root / "llama"


# -- inspect ---------------------------------------------------------------------------------------

def test_inspect_demo_text_and_json():
    result = invoke("inspect", demo_model_path())
    assert result.exit_code == 0, result.output
    assert "d_model 64, 4 layers, 4 query / 2 kv heads of 16, d_ff 192, vocab 48, context 128" in result.stdout
    assert "parameters  : 203,328" in result.stdout
    d = ok_json("inspect", demo_model_path())
    assert d["family"] == "llama" and d["n_params"] == 203_328 and d["int8_weight_bytes"] == 203_328
    assert d["kv_bytes_per_token"] == 2 * 4 * 2 * 16
    assert d["streamed_bytes_per_token"] == 208_000


def test_inspect_gpt2_counts(tiny_dirs):
    d = ok_json("inspect", tiny_dirs[0])
    config = ModelConfig(family="gpt2", vocab_size=12, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2,
                         head_dim=8, d_ff=32, max_context=24, tie_embeddings=True)
    assert d["tie_embeddings"] and d["n_params"] == config.n_params()
    assert {k: d[k] for k in weight_bytes(config)} == weight_bytes(config)
    assert d["tokenizer"] == "character, 10 characters"
    assert ok_json("inspect", tiny_dirs[1])["tokenizer"] is None


# -- golden ----------------------------------------------------------------------------------------

def test_golden_both_on_the_demo_model():
    d = ok_json("golden", "--prompt", "The old miller ", "--tokens", 12)
    assert d["mode"] == "both" and d["prompt"] == "The old miller "
    assert len(d["float"]["ids"]) == len(d["int"]["ids"]) == 12
    assert d["float"]["text"] == "was surprise"           # docs/models.md's greedy sample
    ag = d["agreement"]
    assert ag["tokens"] == 12 and 0 <= ag["identical_prefix"] <= ag["same_positions"] <= 12
    assert d["quantization"]["calibration"].startswith("demo corpus")
    text = invoke("golden", "--tokens", 4)
    assert text.exit_code == 0 and "agreement: identical for the first" in text.stdout
    note = [line for line in text.stdout.splitlines() if line.startswith("note     : ")]
    assert len(note) == 1 and "near-tie" in note[0] and "teacher-forced top-1 agreement" in note[0]
    assert ag["note"] == note[0].removeprefix("note     : ")


def test_golden_divergence_note_quotes_the_documented_agreement():
    """The figure the note points at is the one docs/quantization.md's generated table holds."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "quantization.md").read_text(encoding="utf-8")
    row = next(line for line in doc.splitlines() if line.startswith("| held-out text, all windows |"))
    figure = row.split("|")[3].split("%")[0].strip()
    assert f"({figure} % for the demo model)" in DIVERGENCE_NOTE


def test_golden_modes_and_sampling(tiny_dirs):
    gpt2 = tiny_dirs[0]
    f = ok_json("golden", "--model", gpt2, "--prompt", "abc", "--tokens", 5, "--mode", "float")
    assert "int" not in f and len(f["float"]["text"]) == 5
    i = ok_json("golden", "--model", gpt2, "--prompt", "abc", "--tokens", 5, "--mode", "int",
                "--temperature", 0.8, "--top-k", 3, "--seed", 4)
    assert "float" not in i and i["quantization"]["calibration"].startswith("random tokens")
    again = ok_json("golden", "--model", gpt2, "--prompt", "abc", "--tokens", 5, "--mode", "int",
                    "--temperature", 0.8, "--top-k", 3, "--seed", 4)
    assert again["int"] == i["int"]
    ids = ok_json("golden", "--model", tiny_dirs[1], "--prompt-ids", "1,2,3", "--tokens", 3)
    assert ids["prompt"] is None and ids["prompt_ids"] == [1, 2, 3] and ids["int"]["text"] is None
    assert all(0 <= t < 10 for t in ids["int"]["ids"])


# -- errors ----------------------------------------------------------------------------------------

def test_missing_and_corrupted_checkpoints(tmp_path, tiny_dirs):
    assert_error(invoke("inspect", tmp_path / "nope"), "checkpoint directory does not exist")
    assert_error(invoke("golden", "--model", tmp_path / "nope"), "checkpoint directory does not exist")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((tiny_dirs[0] / "config.json").read_text())
    data = (tiny_dirs[0] / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_error(invoke("inspect", bad), "model.safetensors: cannot read safetensors file")
    (bad / "config.json").write_text("{not json")
    assert_error(invoke("golden", "--model", bad), "config.json: cannot read JSON")


def _damage_config(directory, **changes):
    cfg = json.loads((directory / "config.json").read_text())
    cfg.update(changes)
    (directory / "config.json").write_text(json.dumps(cfg))


def _damage_tensors(directory, edit):
    from safetensors.numpy import load_file, save_file

    file = directory / "model.safetensors"
    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file))


def _damage_bytes(directory, edit):
    file = directory / "model.safetensors"
    file.write_bytes(edit(file.read_bytes()))


# Every bad-checkpoint case of the importer, as a user meets it: through the command line.
BAD_CHECKPOINTS = {
    "unsupported architecture": (lambda d: _damage_config(d, model_type="bert"),
                                 "config.json: unsupported model_type 'bert'"),
    "bad config value": (lambda d: _damage_config(d, n_head=0),
                         "config.json: field 'n_head' must be a positive integer, not 0"),
    "missing tensor": (lambda d: _damage_tensors(d, lambda t: t.pop("transformer.h.0.mlp.c_fc.weight")),
                       "model.safetensors: missing tensor 'transformer.h.0.mlp.c_fc.weight'"),
    "mis-shaped tensor": (lambda d: _damage_tensors(d, lambda t: t.update(
                              {"transformer.h.0.mlp.c_fc.weight": np.zeros((4, 4), np.float32)})),
                          "model.safetensors: tensor 'transformer.h.0.mlp.c_fc.weight' has shape (4, 4)"),
    "corrupted file": (lambda d: _damage_bytes(d, lambda b: b"\xff" * 16 + b[16:]),
                       "model.safetensors: cannot read safetensors file"),
    "truncated file": (lambda d: _damage_bytes(d, lambda b: b[: len(b) // 3]),
                       "model.safetensors: cannot read safetensors file"),
    "context beyond the limit": (lambda d: _damage_config(d, n_positions=10**12),
                                 "config.json: field 'n_positions' must be at most 1,048,576 (the golden "
                                 "model's limit), not 1000000000000"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
@pytest.mark.parametrize("command", ["inspect", "golden", "run"])
def test_every_bad_checkpoint_is_one_line_and_exit_1(tmp_path, tiny_dirs, case, command):
    from sim.cli.commands import main

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dirs[0], bad)
    damage, message = BAD_CHECKPOINTS[case]
    damage(bad)
    args = {"inspect": ["inspect", bad], "golden": ["golden", "--model", bad],
            "run": ["run", "--backend", "golden", "--model", bad]}[command]
    assert_error(CliRunner().invoke(main, [str(a) for a in args]), message)


def test_a_bad_checkpoint_in_a_real_process_and_no_torch_at_run_time(tmp_path, tiny_dirs):
    """The console command itself: exit status 1, one line, no traceback; and importing,
    quantizing and running a checkpoint never loads torch or transformers."""
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dirs[0], bad)
    _damage_bytes(bad, lambda b: b[: len(b) // 3])
    lockstep_cmd = Path(sys.executable).with_name("lockstep")
    done = subprocess.run([lockstep_cmd, "inspect", bad], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("lockstep: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "model.safetensors: cannot read safetensors file" in done.stderr
    probe = ("import sys\n"
             "from sim.cli.commands import main\n"
             "try:\n"
             "    main(['golden', '--model', sys.argv[1], '--prompt', 'abc', '--tokens', '3'])\n"
             "except SystemExit as e:\n"
             "    assert not e.code, e.code\n"
             "loaded = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
             "print('loaded:', loaded)\n")
    done = subprocess.run([sys.executable, "-c", probe, tiny_dirs[0]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "loaded: []", done.stdout


@pytest.mark.parametrize("special", ["fifo", "dev-zero"])
def test_special_config_files_in_a_real_process(tmp_path, tiny_dirs, special):
    """A config.json that is a FIFO (an open would wait for a writer) or /dev/zero (a read never
    ends): the real command answers in one line, well within the timeout."""
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dirs[0], bad)
    (bad / "config.json").unlink()
    if special == "fifo":
        os.mkfifo(bad / "config.json")
    else:
        (bad / "config.json").symlink_to("/dev/zero")
    kind = "a FIFO" if special == "fifo" else "a character device"
    lockstep_cmd = Path(sys.executable).with_name("lockstep")
    for args in (["inspect", bad], ["golden", "--model", bad, "--tokens", "2"]):
        done = subprocess.run([lockstep_cmd, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and done.stdout == "", done.stderr
        assert done.stderr == f"lockstep: error: config.json: not a regular file ({kind}), not a checkpoint's " \
                              f"JSON file\n"


@pytest.mark.parametrize("rope", [{"type": "linear", "factor": 4.0}, {"rope_type": "yarn", "factor": 2.0}])
@pytest.mark.parametrize("command", ["inspect", "golden", "run"])
def test_rope_scaling_the_golden_model_lacks_is_refused_by_every_command(tmp_path, tiny_dirs, rope, command):
    from sim.cli.commands import main

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dirs[1], bad)
    _damage_config(bad, rope_scaling=rope)
    key = "type" if "type" in rope else "rope_type"
    args = {"inspect": ["inspect", bad], "golden": ["golden", "--model", bad, "--prompt-ids", "1"],
            "run": ["run", "--backend", "golden", "--model", bad, "--prompt-ids", "1"]}[command]
    assert_error(CliRunner().invoke(main, [str(a) for a in args]),
                 f"config.json: unsupported rope_scaling.{key}={rope[key]!r} (supported: 'default'; 'dynamic'")


def test_inspect_says_dynamic_rope_changes_nothing(tmp_path, tiny_dirs):
    dyn = tmp_path / "dyn"
    shutil.copytree(tiny_dirs[1], dyn)
    _damage_config(dyn, rope_scaling={"type": "dynamic", "factor": 2.0})
    text = invoke("inspect", dyn)
    assert text.exit_code == 0, text.output
    assert ("rope        : theta 10,000, dynamic (factor 2) scaling, which changes nothing here: positions stop "
            "at max_position_embeddings (16)") in text.stdout
    assert ok_json("inspect", dyn)["rope"] == {"theta": 10000.0, "scaling": "dynamic (factor 2)"}
    assert ok_json("inspect", tiny_dirs[1])["rope"] == {"theta": 10000.0, "scaling": None}
    assert ok_json("inspect", tiny_dirs[0])["rope"] is None
    # the context is where it stops: one position past max_position_embeddings is refused
    assert_error(invoke("golden", "--model", dyn, "--prompt-ids", "1", "--tokens", 17, "--mode", "float"),
                 "needs 17 positions, more than max_context=16")


def test_tiny_temperature_is_greedy_not_nan():
    greedy = ok_json("golden", "--prompt", "The old miller ", "--tokens", 8, "--mode", "float")
    for t in ("1e-308", "5e-324"):
        tiny = ok_json("golden", "--prompt", "The old miller ", "--tokens", 8, "--mode", "float", "--temperature", t)
        assert tiny["float"]["ids"] == greedy["float"]["ids"]


@pytest.mark.parametrize("args,message", [
    (["--prompt", "héllo"], "prompt: character 'é' at position 1 is not in the tokenizer's alphabet"),
    (["--prompt", ""], "the prompt must hold at least one token"),
    (["--tokens", "abc"], "--tokens must be an integer, not 'abc'"),
    (["--tokens", "-1"], "--tokens must be at least 0, not -1"),
    (["--tokens", "500"], "more than max_context=128"),
    (["--temperature", "-0.5"], "--temperature must be at least 0, not -0.5"),
    (["--temperature", "inf"], "--temperature must be a finite number, not 'inf'"),
    (["--top-k", "0"], "--top-k must be at least 1, not 0"),
    (["--top-k", "49"], "--top-k must be at most the vocabulary size 48, not 49"),
    (["--seed", "x"], "--seed must be an integer, not 'x'"),
    (["--prompt-ids", "1,x"], "--prompt-ids must be integers separated by commas, not '1,x'"),
    (["--prompt-ids", "1,99"], "--prompt-ids must be in 0..47, not 99"),
    (["--prompt", "a", "--prompt-ids", "1"], "give either --prompt or --prompt-ids, not both"),
])
def test_bad_golden_arguments(args, message):
    assert_error(invoke("golden", "--mode", "float", *args), message)


def test_text_prompt_needs_a_tokenizer(tiny_dirs):
    assert_error(invoke("golden", "--model", tiny_dirs[1], "--prompt", "hi"),
                 "the checkpoint has no Lockstep tokenizer, so it cannot encode a text prompt")


def test_int_mode_reports_a_full_context(tiny_dirs):
    assert_error(invoke("golden", "--model", tiny_dirs[1], "--prompt-ids", " ".join(["1"] * 10),
                        "--tokens", 8, "--mode", "int"), "needs 17 positions, more than max_context=16")
