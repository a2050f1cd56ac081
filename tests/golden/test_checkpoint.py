"""Checkpoint import/export: round trips, layouts, and one test per bad-checkpoint case.

Checkpoints are written with golden.checkpoint.save_checkpoint (the transformers layout, checked
against transformers itself in test_model_parity.py) and then damaged on purpose.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")
from safetensors.numpy import load_file, save_file  # noqa: E402

from golden.checkpoint import (  # noqa: E402
    CheckpointError,
    hf_tensor_shapes,
    load_checkpoint,
    save_checkpoint,
)
from golden.model import ModelConfig, init_weights  # noqa: E402
from golden.tokenizer import CharTokenizer  # noqa: E402

LLAMA = ModelConfig(family="llama", vocab_size=24, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2,
                    head_dim=4, d_ff=24, max_context=16, rope_theta=100.0)
GPT2 = ModelConfig(family="gpt2", vocab_size=24, d_model=16, n_layers=2, n_heads=2, n_kv_heads=2,
                   head_dim=8, d_ff=48, max_context=16, tie_embeddings=True)
TOKENIZER = CharTokenizer("abcdefghij ")


def _write(path: Path, config: ModelConfig, tokenizer=None) -> dict[str, np.ndarray]:
    weights = init_weights(config, seed=5, std=0.5)
    save_checkpoint(path, config, weights, tokenizer)
    return weights


def _edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is _DELETE:
            del cfg[key]
        else:
            cfg[key] = value
    (path / "config.json").write_text(json.dumps(cfg))


def _edit_tensors(path: Path, edit) -> None:
    file = path / "model.safetensors"
    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file))


_DELETE = object()


def _raises(path: Path, match: str) -> CheckpointError:
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)
    return info.value


# -- good checkpoints -----------------------------------------------------------------------------

@pytest.mark.parametrize("config", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_round_trip(tmp_path, config):
    weights = _write(tmp_path, config, TOKENIZER)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.config == config
    assert ckpt.tokenizer == TOKENIZER
    assert ckpt.weights.keys() == weights.keys()
    for name, w in weights.items():
        assert ckpt.weights[name].dtype == np.float32
        np.testing.assert_array_equal(ckpt.weights[name], w)


def test_gpt2_hub_layout_without_prefix_and_with_mask_buffers(tmp_path):
    """Hub GPT-2 files name tensors without 'transformer.' and may carry the causal-mask buffer."""
    weights = _write(tmp_path, GPT2)

    def strip(t):
        for k in list(t):
            t[k.removeprefix("transformer.")] = t.pop(k)
        t["h.0.attn.bias"] = np.ones((1, 1, 16, 16), np.float32)
    _edit_tensors(tmp_path, strip)
    np.testing.assert_array_equal(load_checkpoint(tmp_path).weights["layers.1.attn.wv"],
                                  weights["layers.1.attn.wv"])


def test_sharded_checkpoint_with_index(tmp_path):
    weights = _write(tmp_path, LLAMA)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, part in shards.items():
        save_file({n: tensors[n] for n in part}, str(tmp_path / file))
        weight_map |= dict.fromkeys(part, file)
    index = {"metadata": {}, "weight_map": weight_map}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    ckpt = load_checkpoint(tmp_path)
    np.testing.assert_array_equal(ckpt.weights["layers.1.mlp.w_gate"], weights["layers.1.mlp.w_gate"])

    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    _raises(tmp_path, r"^model.safetensors.index.json: lists shard 'model-00002-of-00002.safetensors', "
                      r"which does not exist$")
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    _raises(tmp_path, r"^model\.safetensors\.index\.json: missing or bad 'weight_map'$")


def test_duplicate_tensor_across_shards(tmp_path):
    _write(tmp_path, LLAMA)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").rename(tmp_path / "a.safetensors")
    save_file({"model.norm.weight": tensors["model.norm.weight"]}, str(tmp_path / "b.safetensors"))
    _raises(tmp_path, r"^b\.safetensors: tensor 'model\.norm\.weight' is also in a\.safetensors$")


def test_half_precision_tensors_are_widened(tmp_path):
    weights = _write(tmp_path, LLAMA)
    key = "model.norm.weight"
    _edit_tensors(tmp_path, lambda t: t.update({key: t[key].astype(np.float16)}))
    got = load_checkpoint(tmp_path).weights["final_norm.weight"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, weights["final_norm.weight"].astype(np.float16).astype(np.float32))


def _write_raw_safetensors(path: Path, entries: dict[str, tuple[str, tuple, bytes]]) -> None:
    header, blob = {}, b""
    for name, (dtype, shape, data) in entries.items():
        offsets = [len(blob), len(blob) + len(data)]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": offsets}
        blob += data
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + blob)


def test_bfloat16_tensors_are_widened(tmp_path):
    """Most published Llama checkpoints are BF16, which NumPy cannot hold: the importer widens them."""
    weights = _write(tmp_path, LLAMA)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    entries = {}
    for name, arr in tensors.items():
        bf16 = (arr.astype(np.float32).view(np.uint32) >> 16).astype("<u2")
        entries[name] = ("BF16", arr.shape, bf16.tobytes())
    _write_raw_safetensors(tmp_path / "model.safetensors", entries)
    got = load_checkpoint(tmp_path).weights["layers.0.attn.wq"]
    want = (weights["layers.0.attn.wq"].view(np.uint32) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(got, want)
    assert np.max(np.abs(got - weights["layers.0.attn.wq"])) > 0  # truncation really happened


def test_char_tokenizer_only_when_ours(tmp_path):
    _write(tmp_path, LLAMA)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    assert load_checkpoint(tmp_path).tokenizer is None


# -- bad checkpoints: each case has a test ------------------------------------------------------------

def test_missing_directory(tmp_path):
    _raises(tmp_path / "nope", r"nope: checkpoint directory does not exist")


def test_path_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    _raises(tmp_path / "f", r"f: not a directory")


def test_missing_config(tmp_path):
    _write(tmp_path, LLAMA)
    (tmp_path / "config.json").unlink()
    _raises(tmp_path, r"config.json: file not found in ")


def test_config_not_json(tmp_path):
    _write(tmp_path, LLAMA)
    (tmp_path / "config.json").write_text("{ not json")
    _raises(tmp_path, r"^config\.json: cannot read JSON \(Expecting property name enclosed in double quotes: line 1 "
                      r"column 3 \(char 2\)\)$")


def test_config_not_an_object(tmp_path):
    _write(tmp_path, LLAMA)
    (tmp_path / "config.json").write_text("[1, 2]")
    _raises(tmp_path, r"^config\.json: expected a JSON object, not list$")


def test_unsupported_model_type(tmp_path):
    _write(tmp_path, LLAMA)
    _edit_config(tmp_path, model_type="bert")
    _raises(tmp_path, r"^config\.json: unsupported model_type 'bert' \(supported: 'gpt2', 'llama'\)$")


def test_missing_model_type(tmp_path):
    _write(tmp_path, LLAMA)
    _edit_config(tmp_path, model_type=_DELETE)
    _raises(tmp_path, r"^config\.json: missing field 'model_type'$")


@pytest.mark.parametrize(("config", "changes", "match"), [
    (GPT2, dict(n_embd=_DELETE), r"^config\.json: missing field 'n_embd'$"),
    (LLAMA, dict(hidden_size=_DELETE), r"^config\.json: missing field 'hidden_size'$"),
    (GPT2, dict(n_head=0), r"^config\.json: field 'n_head' must be a positive integer, not 0$"),
    (GPT2, dict(n_layer="2"), r"^config\.json: field 'n_layer' must be a positive integer, not '2'$"),
    (GPT2, dict(n_head=3), r"^config\.json: n_embd must be a multiple of n_head, not n_embd=16, n_head=3$"),
    (GPT2, dict(layer_norm_epsilon=-1e-5),
     r"^config\.json: field 'layer_norm_epsilon' must be a positive number, not -1e-05$"),
    (GPT2, dict(activation_function="relu"),
     r"^config\.json: unsupported activation_function='relu' \(supported: 'gelu_new', 'gelu_pytorch_tanh'\)$"),
    (GPT2, dict(scale_attn_by_inverse_layer_idx=True),
     r"^config\.json: unsupported scale_attn_by_inverse_layer_idx=True \(supported: False\)$"),
    (LLAMA, dict(num_attention_heads=6, num_key_value_heads=4, head_dim=4),
     r"^config\.json: n_heads must be a multiple of n_kv_heads, not n_heads=6, n_kv_heads=4$"),
    (LLAMA, dict(num_attention_heads=3, head_dim=_DELETE),
     r"^config\.json: hidden_size must be a multiple of num_attention_heads, not hidden_size=16, "
     r"num_attention_heads=3$"),
    (LLAMA, dict(head_dim=5), r"^config\.json: llama needs an even head_dim for RoPE, not head_dim=5$"),
    (LLAMA, dict(rms_norm_eps=0), r"^config\.json: field 'rms_norm_eps' must be a positive number, not 0$"),
    (LLAMA, dict(tie_word_embeddings="yes"),
     r"^config\.json: field 'tie_word_embeddings' must be true or false, not 'yes'$"),
    (LLAMA, dict(hidden_act="gelu"), r"^config\.json: unsupported hidden_act='gelu' \(supported: 'silu'\)$"),
    (LLAMA, dict(attention_bias=True), r"^config\.json: unsupported attention_bias=True \(supported: False\)$"),
    (LLAMA, dict(rope_parameters={"rope_type": "linear", "factor": 2.0}),
     r"^config.json: unsupported rope_parameters.rope_type='linear' \(supported: 'default'; 'dynamic', which changes "
     r"nothing within max_position_embeddings\)$"),
    (LLAMA, dict(rope_parameters={"rope_type": "default", "rope_theta": -1.0}),
     r"^config\.json: field 'rope_theta' must be a positive number, not -1\.0$"),
    (LLAMA, dict(rope_parameters="fast"), r"^config\.json: field 'rope_parameters' must be an object, not 'fast'$"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_config_values(tmp_path, config, changes, match):
    _write(tmp_path, config)
    _edit_config(tmp_path, **changes)
    _raises(tmp_path, match)


# RoPE variants the golden model does not compute, in every spelling transformers reads: the
# Llama-2-era key "type" (in rope_scaling, beside or instead of rope_parameters) as well as "rope_type".
ROPE_REFUSED = [
    (dict(rope_scaling={"type": "linear", "factor": 4.0}), r"unsupported rope_scaling.type='linear'"),
    (dict(rope_parameters=_DELETE, rope_scaling={"type": "linear", "factor": 4.0}),
     r"unsupported rope_scaling.type='linear'"),
    (dict(rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4}),
     r"unsupported rope_scaling.type='yarn'"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
     r"unsupported rope_scaling.rope_type='llama3'"),
    (dict(rope_parameters={"type": "longrope", "rope_theta": 100.0}), r"unsupported rope_parameters.type='longrope'"),
    (dict(rope_parameters={"rope_type": "default", "type": "linear"}),
     r"rope_parameters.rope_type='default' and rope_parameters.type='linear' disagree"),
    (dict(rope_scaling={"type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 8}),
     r"unsupported rope_scaling.original_max_position_embeddings=8 for rope_type 'dynamic'"),
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 100.0, "partial_rotary_factor": 0.5}),
     r"unsupported rope_parameters.partial_rotary_factor=0.5 for rope_type 'default'"),
    (dict(rope_scaling={"factor": 4.0}), r"unsupported rope_scaling.factor=4.0 for rope_type 'default'"),
]


@pytest.mark.parametrize(("changes", "match"), ROPE_REFUSED, ids=[m for _, m in ROPE_REFUSED])
def test_rope_scaling_the_golden_model_does_not_compute_is_refused(tmp_path, changes, match):
    _write(tmp_path, LLAMA)
    _edit_config(tmp_path, **changes)
    _raises(tmp_path, "^config.json: " + match)


def test_dynamic_rope_is_accepted_as_it_changes_nothing_within_the_context(tmp_path):
    """Dynamic NTK scaling alters the frequencies only past max_position_embeddings, where no run
    goes (generate and step refuse positions >= max_context): the weights and logits are plain RoPE's."""
    weights = _write(tmp_path, LLAMA)
    plain = load_checkpoint(tmp_path)
    assert plain.rope_scaling is None
    _edit_config(tmp_path, rope_scaling={"type": "dynamic", "factor": 4.0})
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.rope_scaling == "dynamic (factor 4)" and ckpt.config == plain.config
    for name in weights:
        np.testing.assert_array_equal(ckpt.weights[name], plain.weights[name])


def test_rope_theta_is_read_from_either_place(tmp_path):
    _write(tmp_path, LLAMA)
    _edit_config(tmp_path, rope_parameters=_DELETE, rope_theta=1234.0)
    assert load_checkpoint(tmp_path).config.rope_theta == 1234.0
    _edit_config(tmp_path, rope_parameters={"rope_type": "default", "rope_theta": 77.0})
    assert load_checkpoint(tmp_path).config.rope_theta == 77.0


def test_no_weight_files(tmp_path):
    _write(tmp_path, LLAMA)
    (tmp_path / "model.safetensors").unlink()
    _raises(tmp_path, r"no model.safetensors, model.safetensors.index.json or other \*.safetensors file")


def test_missing_tensor(tmp_path):
    _write(tmp_path, LLAMA)
    _edit_tensors(tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    _raises(tmp_path, r"^model.safetensors: missing tensor 'model.layers.1.mlp.up_proj.weight'$")


def test_missing_untied_lm_head(tmp_path):
    _write(tmp_path, LLAMA)
    _edit_tensors(tmp_path, lambda t: t.pop("lm_head.weight"))
    _raises(tmp_path, r"^model\.safetensors: missing tensor 'lm_head\.weight'$")


def test_misshaped_tensor(tmp_path):
    _write(tmp_path, GPT2)
    key = "transformer.h.0.attn.c_attn.weight"
    _edit_tensors(tmp_path, lambda t: t.update({key: np.zeros((8, 24), np.float32)}))
    _raises(tmp_path, r"^model.safetensors: tensor 'transformer.h.0.attn.c_attn.weight' has shape \(8, 24\), "
                      r"expected \(16, 48\)$")


def test_transposed_llama_tensor_is_misshaped(tmp_path):
    _write(tmp_path, LLAMA)
    key = "model.layers.0.self_attn.k_proj.weight"
    _edit_tensors(tmp_path, lambda t: t.update({key: np.ascontiguousarray(t[key].T)}))
    _raises(tmp_path, r"^model\.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' has shape \(16, 8\), "
                      r"expected \(8, 16\)$")


def test_unexpected_tensor(tmp_path):
    _write(tmp_path, LLAMA)
    key = "model.layers.0.self_attn.q_proj.bias"
    _edit_tensors(tmp_path, lambda t: t.update({key: np.zeros(16, np.float32)}))
    _raises(tmp_path, r"^model.safetensors: unexpected tensor 'model.layers.0.self_attn.q_proj.bias' "
                      r"for a llama model$")


def test_non_finite_tensor(tmp_path):
    _write(tmp_path, LLAMA)

    def poison(t):
        t["model.norm.weight"][3] = np.nan
    _edit_tensors(tmp_path, poison)
    _raises(tmp_path, r"^model\.safetensors: tensor 'model\.norm\.weight' holds NaN or infinite values \(as float32, "
                      r"whose largest value is 3\.4e38\)$")


def test_finite_float64_that_overflows_float32_is_refused(tmp_path):
    """1e300 is finite in F64 and infinite once cast to float32: the check is made after the cast."""
    _write(tmp_path, LLAMA)

    def widen(t):
        t["model.norm.weight"] = t["model.norm.weight"].astype(np.float64)
        t["model.norm.weight"][2] = 1e300
    _edit_tensors(tmp_path, widen)
    _raises(tmp_path, r"^model.safetensors: tensor 'model.norm.weight' holds NaN or infinite values \(as float32, "
                      r"whose largest value is 3\.4e38\)$")


@pytest.mark.parametrize(("family", "key", "value", "limit"), [
    ("llama", "max_position_embeddings", 10**12, "1,048,576"), ("gpt2", "n_positions", 2**20 + 1, "1,048,576"),
    ("llama", "num_hidden_layers", 10**9, "1,024"),
])
def test_sizes_beyond_the_stated_limits_are_refused_before_any_allocation(tmp_path, family, key, value, limit):
    _write(tmp_path, LLAMA if family == "llama" else GPT2)
    _edit_config(tmp_path, **{key: value})
    _raises(tmp_path, rf"^config.json: field '{key}' must be at most {limit} \(the golden model's limit\), "
                      rf"not {value}$")


def test_largest_context_loads_and_runs_without_a_table_of_that_size(tmp_path):
    """At the limit, the checkpoint loads and the float model runs: RoPE is computed per position."""
    from golden.model import MAX_CONTEXT, Transformer

    _write(tmp_path, LLAMA)
    _edit_config(tmp_path, max_position_embeddings=MAX_CONTEXT)
    ckpt = load_checkpoint(tmp_path)
    model = Transformer(ckpt.config, ckpt.weights)
    assert model.forward([1, 2, 3]).shape == (3, LLAMA.vocab_size)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_special_files_are_refused_without_reading_them(tmp_path, name, kind):
    """Every file a load reads goes through one check: a regular file (a FIFO would block, /dev/zero
    never ends) of bounded size."""
    import os

    _write(tmp_path, LLAMA, TOKENIZER)
    target = tmp_path / name
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dev-zero":
        target.symlink_to("/dev/zero")
    else:
        target.mkdir()
    what = {"fifo": "a FIFO", "dev-zero": "a character device", "directory": "a directory"}[kind]
    json_or_weights = "JSON" if name.endswith(".json") else "safetensors"
    _raises(tmp_path, rf"^{name}: not a regular file \({what}\), not a checkpoint's {json_or_weights} file$")


def test_load_config_reads_config_json_through_the_same_checks(tmp_path):
    import os

    from golden.checkpoint import load_config

    _write(tmp_path, LLAMA)
    assert load_config(tmp_path) == LLAMA
    (tmp_path / "config.json").unlink()
    os.mkfifo(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match=r"^config.json: not a regular file \(a FIFO\), not a checkpoint's JSON "
                                              r"file$"):
        load_config(tmp_path)


def test_oversized_json_is_refused_by_its_size(tmp_path):
    from golden import checkpoint

    _write(tmp_path, LLAMA)
    with open(tmp_path / "config.json", "r+b") as f:     # sparse: no disk space, a huge size
        f.truncate(checkpoint.JSON_MAX_BYTES + 1)
    _raises(tmp_path, r"^config.json: 67,108,865 bytes, more than the 67,108,864 bytes a checkpoint's JSON file "
                      r"may have$")


def test_integer_tensor(tmp_path):
    _write(tmp_path, LLAMA)
    _edit_tensors(tmp_path, lambda t: t.update({"model.norm.weight": np.ones(16, np.int32)}))
    _raises(tmp_path, r"^model\.safetensors: tensor 'model\.norm\.weight' has dtype int32, expected a float type$")


@pytest.mark.parametrize(("damage", "detail"), [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:5], "cut inside the header length"),
    (lambda b: b"", "empty"),
    (lambda b: b"\xff" * 16 + b[16:], "garbage header"),
    (lambda b: b[:8] + b"{ broken" + b[16:], "broken header JSON"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_corrupted_safetensors(tmp_path, damage, detail):
    _write(tmp_path, LLAMA)
    file = tmp_path / "model.safetensors"
    file.write_bytes(damage(file.read_bytes()))
    _raises(tmp_path, r"^model.safetensors: cannot read safetensors file \(")


def test_bad_tokenizer_file(tmp_path):
    _write(tmp_path, LLAMA)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"type": "lockstep-char", "chars": ["a", "a"]}))
    _raises(tmp_path, r"^tokenizer\.json: chars\[1\] repeats 'a' \(already chars\[0\]\)$")
    too_many = [chr(65 + i) for i in range(30)]
    (tmp_path / "tokenizer.json").write_text(json.dumps({"type": "lockstep-char", "chars": too_many}))
    _raises(tmp_path, r"^tokenizer\.json: 30 characters do not fit vocab_size=24$")


def test_save_rejects_mismatched_weights(tmp_path):
    weights = init_weights(LLAMA)
    del weights["lm_head"]
    with pytest.raises(ValueError, match=r"^missing weight 'lm_head'$"):
        save_checkpoint(tmp_path, LLAMA, weights)
    with pytest.raises(ValueError, match=r"^tokenizer has 30 characters, more than vocab_size=24$"):
        save_checkpoint(tmp_path, LLAMA, init_weights(LLAMA), CharTokenizer([chr(65 + i) for i in range(30)]))


def test_hf_shapes_cover_every_stored_tensor(tmp_path):
    for config in (LLAMA, GPT2):
        _write(tmp_path, config)
        stored = load_file(str(tmp_path / "model.safetensors"))
        names = {k.removeprefix("transformer.") for k in stored}
        assert names == set(hf_tensor_shapes(config))
        shapes = hf_tensor_shapes(config)
        assert all(tuple(v.shape) == shapes[k.removeprefix("transformer.")] for k, v in stored.items())
