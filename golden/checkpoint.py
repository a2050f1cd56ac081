"""Hugging Face checkpoint import and export for the float reference model.

A checkpoint is a directory holding ``config.json`` and the weights as safetensors: either one
``model.safetensors``, or shards listed in ``model.safetensors.index.json`` (its ``weight_map``
names the file of every tensor), or, without an index, every ``*.safetensors`` file in the
directory. ``tokenizer.json`` is read only when it is a Lockstep character tokenizer
(``golden.tokenizer``); any other tokenizer is left to the caller (``Checkpoint.tokenizer`` is None).

Supported ``model_type`` values are ``"gpt2"`` (GPT2LMHeadModel, Conv1D weights stored as
``(in_features, out_features)``, fused ``c_attn``) and ``"llama"`` (LlamaForCausalLM, ``nn.Linear``
weights stored as ``(out_features, in_features)``). Tensors are read with the safetensors library
(NumPy framework; torch is never imported) and converted to float32; F16, BF16, F32 and F64 are
accepted. The mapping from Hugging Face names to the names of ``golden.model.weight_shapes`` is
documented in docs/models.md.

Every problem raises ``CheckpointError`` (a ValueError) with a one-line message naming the file
and the problem: a missing directory or file, a file that is not a regular file (a FIFO, a device)
or is larger than its cap, unreadable JSON, an unsupported architecture or option (a RoPE variant
included), a missing, bad or too large config field, a corrupted or truncated safetensors file, a
missing, unexpected, mis-shaped or non-finite (as float32) tensor. Every file is opened by one
helper, ``open_regular`` (also used for hardware TOMLs and sweep specs); ``load_config`` reads
config.json alone through it.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golden.model import MAX_CONTEXT, MAX_LAYERS, ModelConfig, check_weights
from golden.tokenizer import CharTokenizer

from .errors import InputError

__all__ = [
    "Checkpoint", "CheckpointError", "config_from_hf", "config_to_hf", "demo_model_path",
    "hf_tensor_shapes", "load_checkpoint", "load_config", "load_demo_model", "save_checkpoint",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
#: Largest JSON file a load reads (config.json, the shard index, tokenizer.json): real ones are
#: kilobytes (config, index) to tens of megabytes (a large BPE tokenizer.json).
JSON_MAX_BYTES = 64 << 20
#: Largest safetensors file a load opens: the golden model holds every weight as float32 in memory.
SAFETENSORS_MAX_BYTES = 64 << 30

#: RoPE variants of ``rope_type`` (or its older spelling ``type``) the golden model computes.
#: "dynamic" (dynamic NTK) changes the frequencies only for sequences longer than
#: max_position_embeddings, which no run reaches: every position is < max_context.
ROPE_TYPES = ("default", "dynamic")
_ROPE_KEYS = {"default": {"rope_type", "type", "rope_theta"},
              "dynamic": {"rope_type", "type", "rope_theta", "factor"}}

# Buffers some exporters write that carry no weights (GPT-2's causal mask, Llama's RoPE table).
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")


class CheckpointError(InputError):
    """A checkpoint directory that cannot be imported; the message is one line naming the file."""


@dataclass(frozen=True)
class Checkpoint:
    """An imported checkpoint: its configuration, golden-model weights and tokenizer (or None)."""

    path: Path
    config: ModelConfig
    weights: dict[str, np.ndarray]
    tokenizer: CharTokenizer | None
    #: The RoPE scaling accepted beside plain RoPE (None for plain RoPE and GPT-2), e.g.
    #: "dynamic (factor 4.0)", which changes nothing within max_context.
    rope_scaling: str | None = None


def demo_model_path() -> Path:
    """Directory of the demo model shipped with the package (``golden/data/demo``)."""
    return Path(__file__).resolve().parent / "data" / "demo"


def draft_model_path() -> Path:
    """Directory of the draft model shipped with the package (``golden/data/draft``): a one-layer model
    of the demo corpus with the demo model's tokenizer, for speculative decoding (docs/models.md)."""
    return Path(__file__).resolve().parent / "data" / "draft"


def load_demo_model() -> Checkpoint:
    """Import the shipped demo model (a Llama-family character model; see docs/models.md)."""
    return load_checkpoint(demo_model_path())


# -- config.json <-> ModelConfig ---------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _field(cfg: dict, key: str, kind: str, default=None, required: bool = True, high: int | None = None):
    """Return ``cfg[key]`` checked as a positive int ("int", at most ``high``), positive number
    ("float") or bool."""
    if key not in cfg or cfg[key] is None:
        if default is not None or not required:
            return default
        raise CheckpointError(f"{CONFIG_FILE}: missing field {key!r}")
    value = cfg[key]
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CheckpointError(f"{CONFIG_FILE}: field {key!r} must be a positive integer, not {value!r}")
        if high is not None and value > high:
            raise CheckpointError(f"{CONFIG_FILE}: field {key!r} must be at most {high:,} (the golden "
                                  f"model's limit), not {value}")
    elif kind == "float":
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not (math.isfinite(value) and value > 0)):
            raise CheckpointError(f"{CONFIG_FILE}: field {key!r} must be a positive number, not {value!r}")
    elif kind == "bool" and not isinstance(value, bool):
        raise CheckpointError(f"{CONFIG_FILE}: field {key!r} must be true or false, not {value!r}")
    return value


def _require(cfg: dict, key: str, allowed: tuple, default) -> None:
    value = cfg.get(key, default)
    if value not in allowed:
        raise CheckpointError(f"{CONFIG_FILE}: unsupported {key}={value!r} (supported: "
                              f"{', '.join(map(repr, allowed))})")


def _config_from_gpt2(cfg: dict) -> dict:
    _require(cfg, "activation_function", ("gelu_new", "gelu_pytorch_tanh"), "gelu_new")
    _require(cfg, "scale_attn_weights", (True,), True)
    _require(cfg, "scale_attn_by_inverse_layer_idx", (False,), False)
    _require(cfg, "add_cross_attention", (False,), False)
    d_model = _field(cfg, "n_embd", "int")
    n_heads = _field(cfg, "n_head", "int")
    if d_model % n_heads:
        raise CheckpointError(f"{CONFIG_FILE}: n_embd must be a multiple of n_head, "
                              f"not n_embd={d_model}, n_head={n_heads}")
    return dict(
        family="gpt2", vocab_size=_field(cfg, "vocab_size", "int"), d_model=d_model,
        n_layers=_field(cfg, "n_layer", "int", high=MAX_LAYERS), n_heads=n_heads, n_kv_heads=n_heads,
        head_dim=d_model // n_heads, d_ff=_field(cfg, "n_inner", "int", default=4 * d_model),
        max_context=_field(cfg, "n_positions", "int", high=MAX_CONTEXT),
        norm_eps=_field(cfg, "layer_norm_epsilon", "float", default=1e-5),
        tie_embeddings=_field(cfg, "tie_word_embeddings", "bool", default=True),
    )


def _rope_scaling(cfg: dict) -> tuple[float | None, str | None]:
    """Check ``rope_parameters`` and ``rope_scaling`` (either, both or none); return the rope_theta
    they give (or None) and a description of an accepted scaling (None for plain RoPE).

    The type is read from ``rope_type`` or from its Llama-2-era spelling ``type`` (transformers
    reads both); any type but ROPE_TYPES, two different types, or a key the accepted type does not
    use is refused: the golden model would otherwise compute plain RoPE where the checkpoint
    means something else."""
    theta, scaling = None, None
    for where in ("rope_parameters", "rope_scaling"):
        rope = cfg.get(where)
        if rope is None:
            continue
        if not isinstance(rope, dict):
            raise CheckpointError(f"{CONFIG_FILE}: field {where!r} must be an object, not {rope!r}")
        spelled = [k for k in ("rope_type", "type") if rope.get(k) is not None]
        kinds = {rope[k] for k in spelled}
        if len(kinds) > 1:
            raise CheckpointError(f"{CONFIG_FILE}: {where}.rope_type={rope['rope_type']!r} and "
                                  f"{where}.type={rope['type']!r} disagree")
        kind = rope[spelled[0]] if spelled else "default"
        if kind not in ROPE_TYPES:
            key = f"{where}.{spelled[0]}"
            raise CheckpointError(f"{CONFIG_FILE}: unsupported {key}={kind!r} (supported: 'default'; "
                                  f"'dynamic', which changes nothing within max_position_embeddings)")
        extra = sorted(set(rope) - _ROPE_KEYS[kind])
        if rope.get("partial_rotary_factor") == 1.0:
            extra.remove("partial_rotary_factor")      # rotating every lane is what the golden model does
        if extra:
            raise CheckpointError(f"{CONFIG_FILE}: unsupported {where}.{extra[0]}={rope[extra[0]]!r} "
                                  f"for rope_type {kind!r}")
        if kind == "dynamic":
            factor = _field(rope, "factor", "float")
            scaling = f"dynamic (factor {factor:g})"
        own = _field(rope, "rope_theta", "float", required=False)
        theta = own if theta is None else theta
    return theta, scaling


def _config_from_llama(cfg: dict) -> dict:
    _require(cfg, "hidden_act", ("silu",), "silu")
    _require(cfg, "attention_bias", (False,), False)
    _require(cfg, "mlp_bias", (False,), False)
    theta, _ = _rope_scaling(cfg)
    if theta is None:
        theta = _field(cfg, "rope_theta", "float", default=10000.0)
    d_model = _field(cfg, "hidden_size", "int")
    n_heads = _field(cfg, "num_attention_heads", "int")
    head_dim = _field(cfg, "head_dim", "int", required=False)
    if head_dim is None:
        if d_model % n_heads:
            raise CheckpointError(f"{CONFIG_FILE}: hidden_size must be a multiple of num_attention_heads, "
                                  f"not hidden_size={d_model}, num_attention_heads={n_heads}")
        head_dim = d_model // n_heads
    return dict(
        family="llama", vocab_size=_field(cfg, "vocab_size", "int"), d_model=d_model,
        n_layers=_field(cfg, "num_hidden_layers", "int", high=MAX_LAYERS), n_heads=n_heads,
        n_kv_heads=_field(cfg, "num_key_value_heads", "int", default=n_heads), head_dim=head_dim,
        d_ff=_field(cfg, "intermediate_size", "int"),
        max_context=_field(cfg, "max_position_embeddings", "int", high=MAX_CONTEXT),
        norm_eps=_field(cfg, "rms_norm_eps", "float", default=1e-6), rope_theta=theta,
        tie_embeddings=_field(cfg, "tie_word_embeddings", "bool", default=False),
    )


_CONFIG_READERS: dict[str, Callable[[dict], dict]] = {"gpt2": _config_from_gpt2, "llama": _config_from_llama}


def config_from_hf(cfg: dict) -> ModelConfig:
    """Build a ModelConfig from the parsed ``config.json`` of a GPT-2 or Llama checkpoint.

    Raises CheckpointError naming the field for a missing or bad value or an unsupported option.
    """
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{CONFIG_FILE}: expected a JSON object, not {type(cfg).__name__}")
    model_type = cfg.get("model_type")
    if model_type is None:
        raise CheckpointError(f"{CONFIG_FILE}: missing field 'model_type'")
    if model_type not in _CONFIG_READERS:
        raise CheckpointError(f"{CONFIG_FILE}: unsupported model_type {model_type!r} "
                              f"(supported: {', '.join(map(repr, _CONFIG_READERS))})")
    fields = _CONFIG_READERS[model_type](cfg)
    try:
        return ModelConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{CONFIG_FILE}: {_one_line(exc)}") from None


def config_to_hf(config: ModelConfig) -> dict:
    """The ``config.json`` contents transformers needs to rebuild ``config`` (inverse of config_from_hf)."""
    c = config
    if c.family == "gpt2":
        return {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
            "n_embd": c.d_model, "n_layer": c.n_layers, "n_head": c.n_heads, "n_inner": c.d_ff,
            "n_positions": c.max_context, "layer_norm_epsilon": c.norm_eps,
            "activation_function": "gelu_new", "tie_word_embeddings": c.tie_embeddings,
            "bos_token_id": None, "eos_token_id": None,
        }
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": c.vocab_size,
        "hidden_size": c.d_model, "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim, "intermediate_size": c.d_ff,
        "max_position_embeddings": c.max_context, "rms_norm_eps": c.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "rope_theta": c.rope_theta, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "tie_word_embeddings": c.tie_embeddings, "bos_token_id": None, "eos_token_id": None,
    }


# -- tensor names ---------------------------------------------------------------------------------

def hf_tensor_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a Hugging Face checkpoint of ``config`` must hold, with its stored shape.

    GPT-2 names are given without the optional ``transformer.`` prefix.
    """
    c = config
    s: dict[str, tuple[int, ...]] = {}
    if c.family == "gpt2":
        s["wte.weight"] = (c.vocab_size, c.d_model)
        s["wpe.weight"] = (c.max_context, c.d_model)
        for i in range(c.n_layers):
            p = f"h.{i}."
            s |= {p + "ln_1.weight": (c.d_model,), p + "ln_1.bias": (c.d_model,),
                  p + "attn.c_attn.weight": (c.d_model, 3 * c.d_model),
                  p + "attn.c_attn.bias": (3 * c.d_model,),
                  p + "attn.c_proj.weight": (c.d_model, c.d_model), p + "attn.c_proj.bias": (c.d_model,),
                  p + "ln_2.weight": (c.d_model,), p + "ln_2.bias": (c.d_model,),
                  p + "mlp.c_fc.weight": (c.d_model, c.d_ff), p + "mlp.c_fc.bias": (c.d_ff,),
                  p + "mlp.c_proj.weight": (c.d_ff, c.d_model), p + "mlp.c_proj.bias": (c.d_model,)}
        s["ln_f.weight"] = (c.d_model,)
        s["ln_f.bias"] = (c.d_model,)
    else:
        s["model.embed_tokens.weight"] = (c.vocab_size, c.d_model)
        for i in range(c.n_layers):
            p = f"model.layers.{i}."
            s |= {p + "input_layernorm.weight": (c.d_model,),
                  p + "self_attn.q_proj.weight": (c.q_dim, c.d_model),
                  p + "self_attn.k_proj.weight": (c.kv_dim, c.d_model),
                  p + "self_attn.v_proj.weight": (c.kv_dim, c.d_model),
                  p + "self_attn.o_proj.weight": (c.d_model, c.q_dim),
                  p + "post_attention_layernorm.weight": (c.d_model,),
                  p + "mlp.gate_proj.weight": (c.d_ff, c.d_model),
                  p + "mlp.up_proj.weight": (c.d_ff, c.d_model),
                  p + "mlp.down_proj.weight": (c.d_model, c.d_ff)}
        s["model.norm.weight"] = (c.d_model,)
    if not c.tie_embeddings:
        s["lm_head.weight"] = (c.vocab_size, c.d_model)
    return s


def _name_map(config: ModelConfig) -> list[tuple[str, str, bool]]:
    """(Hugging Face name, golden name, stored transposed) for every one-to-one tensor: the one
    table that import and export both read. GPT-2's fused q/k/v tensors are handled beside it."""
    c, m = config, []
    if c.family == "gpt2":
        m += [("wte.weight", "tok_embed", False), ("wpe.weight", "pos_embed", False)]
        for i in range(c.n_layers):
            h, p = f"h.{i}.", f"layers.{i}."
            m += [(h + hf, p + ours, False) for hf, ours in (
                ("ln_1.weight", "attn_norm.weight"), ("ln_1.bias", "attn_norm.bias"),
                ("attn.c_proj.weight", "attn.wo"), ("attn.c_proj.bias", "attn.bo"),
                ("ln_2.weight", "mlp_norm.weight"), ("ln_2.bias", "mlp_norm.bias"),
                ("mlp.c_fc.weight", "mlp.w_up"), ("mlp.c_fc.bias", "mlp.b_up"),
                ("mlp.c_proj.weight", "mlp.w_down"), ("mlp.c_proj.bias", "mlp.b_down"))]
        m += [("ln_f.weight", "final_norm.weight", False), ("ln_f.bias", "final_norm.bias", False)]
    else:
        m += [("model.embed_tokens.weight", "tok_embed", False)]
        for i in range(c.n_layers):
            h, p = f"model.layers.{i}.", f"layers.{i}."
            m += [(h + "input_layernorm.weight", p + "attn_norm.weight", False),
                  (h + "post_attention_layernorm.weight", p + "mlp_norm.weight", False)]
            m += [(h + hf, p + ours, True) for hf, ours in (
                ("self_attn.q_proj.weight", "attn.wq"), ("self_attn.k_proj.weight", "attn.wk"),
                ("self_attn.v_proj.weight", "attn.wv"), ("self_attn.o_proj.weight", "attn.wo"),
                ("mlp.gate_proj.weight", "mlp.w_gate"), ("mlp.up_proj.weight", "mlp.w_up"),
                ("mlp.down_proj.weight", "mlp.w_down"))]
        m += [("model.norm.weight", "final_norm.weight", False)]
    if not c.tie_embeddings:
        m += [("lm_head.weight", "lm_head", True)]
    return m


def _hf_to_weights(config: ModelConfig, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    c = config
    w = {ours: (t[hf].T if transposed else t[hf]) for hf, ours, transposed in _name_map(c)}
    if c.family == "gpt2":
        d = c.d_model
        for i in range(c.n_layers):
            h, p = f"h.{i}.", f"layers.{i}."
            qkv, qkv_b = t[h + "attn.c_attn.weight"], t[h + "attn.c_attn.bias"]
            for j, x in enumerate("qkv"):
                w[p + f"attn.w{x}"] = qkv[:, j * d:(j + 1) * d]
                w[p + f"attn.b{x}"] = qkv_b[j * d:(j + 1) * d]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in w.items()}


def _weights_to_hf(config: ModelConfig, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    c = config
    t = {hf: (w[ours].T if transposed else w[ours]) for hf, ours, transposed in _name_map(c)}
    if c.family == "gpt2":
        for i in range(c.n_layers):
            h, p = f"h.{i}.", f"layers.{i}."
            t[h + "attn.c_attn.weight"] = np.concatenate([w[p + f"attn.w{x}"] for x in "qkv"], axis=1)
            t[h + "attn.c_attn.bias"] = np.concatenate([w[p + f"attn.b{x}"] for x in "qkv"])
        t = {"transformer." + k: v for k, v in t.items()}
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in t.items()}


# -- safetensors reading ----------------------------------------------------------------------------

def _read_bf16(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """BF16 tensors by hand (NumPy has no bfloat16): the header was already validated by safetensors."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        out = {}
        for name in names:
            begin, end = header[name]["data_offsets"]
            f.seek(8 + n + begin)
            raw = np.frombuffer(f.read(end - begin), dtype="<u2")
            out[name] = (raw.astype(np.uint32) << 16).view(np.float32).reshape(header[name]["shape"])
    return out


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open  # imported here so that golden.model works without the hf extra

    label = path.name
    _open_checked(path, SAFETENSORS_MAX_BYTES).close()
    try:
        with safe_open(str(path), framework="np") as f:
            names = list(f.keys())
            dtypes = {n: f.get_slice(n).get_dtype() for n in names}
            bf16 = [n for n in names if dtypes[n] == "BF16"]
            out = {n: f.get_tensor(n) for n in names if dtypes[n] != "BF16"}
        out |= _read_bf16(path, bf16)
    except Exception as exc:  # safetensors raises SafetensorError, a bare Exception subclass
        raise CheckpointError(f"{label}: cannot read safetensors file ({_one_line(exc)})") from None
    for name, arr in out.items():
        if not (np.issubdtype(arr.dtype, np.floating)):
            raise CheckpointError(f"{label}: tensor {name!r} has dtype {arr.dtype}, expected a float type")
    return out


def _weight_files(root: Path) -> list[Path]:
    index = root / INDEX_FILE
    if index.exists():
        data = _read_json(index)
        wmap = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
            raise CheckpointError(f"{INDEX_FILE}: missing or bad 'weight_map'")
        files = [root / name for name in sorted(set(wmap.values()))]
        for f in files:
            if not f.exists():
                raise CheckpointError(f"{INDEX_FILE}: lists shard {f.name!r}, which does not exist")
        return files
    if (root / WEIGHTS_FILE).exists():
        return [root / WEIGHTS_FILE]
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{root}: no {WEIGHTS_FILE}, {INDEX_FILE} or other *.safetensors file")
    return files


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path: Path, limit: int, what: str, *, error: type[Exception] = None, label: str | None = None):
    """Open ``path`` for reading after checking it is a regular file of at most ``limit`` bytes.

    The one rule for every file Lockstep reads whole from a user (a checkpoint's files, a hardware
    TOML, a sweep spec). The open does not block (a FIFO would wait for a writer) and the checks
    are made on the opened file, so neither a FIFO nor a device such as /dev/zero is ever read.
    Raises ``error`` (CheckpointError by default) naming the file (``label``, default its name) and
    ``what`` it should have been."""
    error = error or CheckpointError
    label = label or path.name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{label}: file not found in {path.parent}") from None
    except OSError as exc:
        raise error(f"{label}: cannot open ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "not a file")
        raise error(f"{label}: not a regular file ({kind}), not {what}")
    if st.st_size > limit:
        os.close(fd)
        raise error(f"{label}: {st.st_size:,} bytes, more than the {limit:,} bytes {what} may have")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _open_checked(path: Path, limit: int):
    """A checkpoint's file through :func:`open_regular`. Raises CheckpointError naming the file."""
    return open_regular(path, limit, f"a checkpoint's {'JSON' if limit == JSON_MAX_BYTES else 'safetensors'} file")


def _read_json(path: Path):
    with _open_checked(path, JSON_MAX_BYTES) as f:
        try:
            data = f.read(JSON_MAX_BYTES + 1)
        except OSError as exc:
            raise CheckpointError(f"{path.name}: cannot read ({exc.strerror})") from None
    if len(data) > JSON_MAX_BYTES:  # grew since it was checked
        raise CheckpointError(f"{path.name}: more than the {JSON_MAX_BYTES:,} bytes a checkpoint's JSON file may have")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path.name}: cannot read JSON ({_one_line(exc)})") from None


# -- public API --------------------------------------------------------------------------------------

def load_config(path: str | Path) -> ModelConfig:
    """The ModelConfig of a checkpoint directory's config.json alone (no weights), read and checked
    exactly as :func:`load_checkpoint` reads it. Raises CheckpointError."""
    root = _checked_dir(Path(path))
    return config_from_hf(_read_json(root / CONFIG_FILE))


def _checked_dir(root: Path) -> Path:
    if not root.exists():
        raise CheckpointError(f"{root}: checkpoint directory does not exist")
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory (a checkpoint is a directory with {CONFIG_FILE})")
    return root


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Import a GPT-2 or Llama checkpoint directory into golden-model weights (float32).

    Every tensor listed by ``hf_tensor_shapes`` must be present once with its shape, and no other
    tensor may be (apart from known non-weight buffers, and a ``lm_head.weight`` beside tied
    embeddings, which is ignored). Raises CheckpointError with a one-line message otherwise.
    """
    root = _checked_dir(Path(path))
    raw = _read_json(root / CONFIG_FILE)
    config = config_from_hf(raw)
    rope_scaling = _rope_scaling(raw)[1] if config.family == "llama" else None
    expected = hf_tensor_shapes(config)
    tensors: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    prefix = ""                      # GPT-2's optional "transformer.", as the file spells its names
    for file in _weight_files(root):
        for name, arr in _read_safetensors(file).items():
            key = name
            if config.family == "gpt2" and key.startswith("transformer."):
                key, prefix = key[len("transformer."):], "transformer."
            if key not in expected:
                if key.endswith(_IGNORED_SUFFIXES) or (key == "lm_head.weight" and config.tie_embeddings):
                    continue
                raise CheckpointError(f"{file.name}: unexpected tensor {name!r} for a {config.family} model")
            if key in tensors:
                raise CheckpointError(f"{file.name}: tensor {name!r} is also in {origin[key]}")
            if tuple(arr.shape) != expected[key]:
                raise CheckpointError(f"{file.name}: tensor {name!r} has shape {tuple(arr.shape)}, "
                                      f"expected {expected[key]}")
            # Checked after the cast to float32, the golden model's dtype: 1e300 in F64 is finite
            # there and infinite here.
            with np.errstate(over="ignore"):
                arr = arr.astype(np.float32)
            if not np.isfinite(arr).all():
                raise CheckpointError(f"{file.name}: tensor {name!r} holds NaN or infinite values "
                                      f"(as float32, whose largest value is 3.4e38)")
            tensors[key], origin[key] = arr, file.name
    missing = [k for k in expected if k not in tensors]
    if missing:
        where = ", ".join(sorted({f.name for f in _weight_files(root)}))
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        name = missing[0] if missing[0] == "lm_head.weight" else prefix + missing[0]
        raise CheckpointError(f"{where}: missing tensor {name!r}{more}")
    weights = _hf_to_weights(config, tensors)
    tokenizer = None
    if (root / TOKENIZER_FILE).exists():
        tok = _read_json(root / TOKENIZER_FILE)
        if isinstance(tok, dict) and tok.get("type") == CharTokenizer.TYPE:
            try:
                tokenizer = CharTokenizer.from_dict(tok)
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{TOKENIZER_FILE}: {_one_line(exc)}") from None
            if tokenizer.vocab_size > config.vocab_size:
                raise CheckpointError(f"{TOKENIZER_FILE}: {tokenizer.vocab_size} characters do not fit "
                                      f"vocab_size={config.vocab_size}")
    return Checkpoint(root, config, weights, tokenizer, rope_scaling)


def save_checkpoint(path: str | Path, config: ModelConfig, weights: dict[str, np.ndarray],
                    tokenizer: CharTokenizer | None = None) -> None:
    """Write ``config`` and ``weights`` as a Hugging Face checkpoint directory (float32).

    Writes ``config.json``, ``model.safetensors`` (transformers' tensor names, so both
    ``load_checkpoint`` and ``transformers.AutoModelForCausalLM.from_pretrained`` read it) and,
    when given, ``tokenizer.json``. Creates the directory if needed; raises ValueError if the
    weights do not match ``config``.
    """
    from safetensors.numpy import save_file

    check_weights(config, weights)
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / CONFIG_FILE).write_text(json.dumps(config_to_hf(config), indent=2) + "\n", encoding="utf-8")
    save_file(_weights_to_hf(config, weights), str(root / WEIGHTS_FILE), metadata={"format": "pt"})
    if tokenizer is not None:
        if tokenizer.vocab_size > config.vocab_size:
            raise InputError(f"tokenizer has {tokenizer.vocab_size} characters, more than "
                             f"vocab_size={config.vocab_size}")
        tokenizer.save(root / TOKENIZER_FILE)
