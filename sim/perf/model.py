"""The performance model: tokens per second of any model on any hardware description.

    tokens/s = batch / (seconds per decode step)
    seconds per decode step = cycles / clock + memory latency + link time

The cycles are :func:`sim.machine.cycles.decode_step_cycles` of the model's integer program
(:func:`golden.quantize.program_structure`): the one cycle model, the one the RTL confirms. This
module only decides *what* it is asked (which program, which array, which weight bandwidth) and adds
what the cycle model does not describe (several chips, their links, a memory's latency). The
decisions are written out in docs/performance.md; in short:

* **Context.** ``context`` = N tokens: the estimate is the mean cost of a token over positions
  0..N-1. The cycle model is affine in the position (only attention depends on it, linearly), so
  the mean is the average of the first and last positions' predictions (a test checks it against
  the full mean). Default: half the model's context, capped at 4096 (``default_context``).
* **Weight bandwidth.** The array's weight port takes ``C`` weights a cycle; the memory level that
  holds the weights delivers ``bandwidth / clock / weight_bytes`` of them. The cycle model is given
  ``weight_bytes_per_cycle = min(C, that)`` in *elements* (16-bit weights halve it: the port is
  as wide as C weights of the hardware's type, the memory is not).
* **Several chips** (Groq, Cerebras): ``chips = S * T``: S pipeline stages (ceil(layers / S)
  layers each), each T chips. Every chip of a stage runs the *shard* program (``shard_program``)
  for everything but the GEMMs: 1/T of the query and key/value heads (at least one), of the FFN
  width and of the LM head's vocabulary; norms and residual adds replicated. The GEMMs are split by
  ``shard_plan``: per group of GEMMs sharing an input, Megatron's 1-D split (Q, K, V, gate, up by
  output columns, O and down by input rows) or a 2-D split (K a ways x N b ways, a * b <= T, the
  shard shape that best fits the R x C array), whichever costs less: shard cycles from
  ``op_cycles`` plus link phases (all-gathers of sliced inputs, reduce-scatters of K-split partial
  sums, all-gathers of residual-bound outputs) at ``[tp_link]`` latency and bandwidth. The stages
  run one after another for a token, so the step is the stage program's cycles (all layers) plus
  one link hop per stage boundary, the GEMMs' link phases and one gather of the argmax candidates.
  With more chips in a stage than query heads (a wafer's cores), a head's KV positions are split
  ``T // n_heads`` ways (``kv_split``): each chip attends over its share and the partial results
  are reduced, one more link phase a layer.
* **Batch** > 1 (not confirmed by the RTL, which runs batch 1): every GEMM streams ``batch``
  activation rows per weight tile (``gemm_cycles(m=batch)``); every other instruction runs once per
  sequence (see ``batched_step_cycles``).
"""

from __future__ import annotations

import copy
import functools
import math
import math as _m
import sys
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from golden.checkpoint import load_config, open_regular
from golden.errors import InputError
from golden.model import MAX_CONTEXT, MAX_LAYERS, ModelConfig, weight_shapes
from golden.numerics import ceil_div
from golden.quantize import program_structure
from hdl.config import (
    BOOL_KEYS,
    CHIP_EXTRA_KEYS,
    DEFAULT,
    DESIGN_DIR,
    MAX_ARRAY,
    Config,
    chip_config,
    weight_rows_problem,
)

from ..machine.cycles import decode_step_cycles, gemm_cycles, op_cycles, residual_cycles
from ..machine.schedule import instruction_groups
from ..numbers import count, number, quantity

__all__ = ["CALIBRATION", "HARDWARE_LIMITS", "MAX_BATCH", "MAX_CONTEXT", "MAX_LAYERS", "MAX_TEXT_BYTES", "MODELS",
           "PRESET_DIR", "PSUM_BYTES", "Estimate", "GemmSplit", "Hardware", "HardwareError", "Link", "MemoryLevel",
           "Prefill", "ShardPlan", "batched_step_cycles", "calibration_markdown", "calibration_rows", "check_limit",
           "check_workload", "default_context", "estimate", "format_breakdown", "format_estimate", "format_prefill",
           "gemm_weight_bytes", "hardware_data", "hardware_from_dict", "kv_cache_bytes", "kv_split", "list_presets",
           "load_hardware", "local_position", "place", "prefill", "read_text", "read_toml", "resolve_model",
           "row_pass", "shard_plan", "shard_program", "shard_shape", "show_limit", "show_number", "step_cycles",
           "sum_local_positions",
           "update_calibration_doc"]

#: The shipped design points (``hdl/designs/*.toml``, one description for every command: :mod:`sim.design`).
PRESET_DIR = DESIGN_DIR
#: The default context is half the model's, capped here (a 128 k-token model is rarely run full).
DEFAULT_CONTEXT_CAP = 4096
#: The largest batch an estimate takes (above any decode batch); past it a number is a typo, not a
#: workload. The largest context and the most layers are the model's own limits
#: (``golden.model.MAX_CONTEXT`` and ``MAX_LAYERS``: a ModelConfig past them does not exist), so a
#: context beyond the model's ``max_context`` is the one check left here.
MAX_BATCH = 1 << 16

#: Sane bounds of every hardware quantity, ``key: (least, most)`` (docs/performance.md, "Hardware
#: descriptions"): a value outside them is a typo or a unit slip, not a machine, and would drive the
#: estimate to inf or 0 (a 1e308 Hz clock prints Infinity). Checked wherever hardware is made (TOML
#: files, presets, sweep points) by :func:`check_limit`. The arrays' bound is the cycle model's
#: largest array (hdl.config.MAX_ARRAY, 1024).
HARDWARE_LIMITS = {
    "array_rows": (1, MAX_ARRAY), "array_cols": (1, MAX_ARRAY),
    "vector_lanes": (1, 1 << 20), "attention_finish_lanes": (0, 1 << 20),
    "weight_rows_per_cycle": (1, MAX_ARRAY),       # and it divides array_rows (Hardware checks)
    "attention_heads_per_step": (1, 64),           # hdl.config's MAX_HEADS_PER_STEP
    "clock_hz": (1e3, 1e11),                       # 1 kHz .. 100 GHz
    "capacity_bytes": (1, 1e15),                   # 1 B .. 1 PB a chip
    "bandwidth_bytes_per_s": (1, 1e18),            # 1 B/s .. 1 EB/s (memories and links)
    "latency_s": (0, 1),                           # 0 .. 1 s (memories and links)
    "chips": (1, 1 << 24), "tensor_parallel": (1, 1 << 24),
}


class HardwareError(InputError):
    """A hardware description that cannot be used, or a model that does not fit it (one line)."""


#: The largest text file (a hardware TOML, a sweep spec, a checkpoint's config.json) read whole.
MAX_TEXT_BYTES = 4 << 20


def read_text(path, what: str) -> str:
    """The text of a regular file of at most :data:`MAX_TEXT_BYTES` (UTF-8). ``FileNotFoundError``
    when there is none; ``OSError`` naming ``what`` and the path for a FIFO or device (opening one
    would wait for a writer, or read /dev/zero until memory ran out), a larger file, or bytes that
    are not UTF-8: checked before more than the cap is read."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(p)
    with open_regular(p, MAX_TEXT_BYTES, what, error=OSError, label=str(p)) as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise OSError(f"{p}: larger than {MAX_TEXT_BYTES >> 20} MiB, too large for {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OSError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start}), not {what}") from None


def show_number(v) -> str:
    """A number as a message shows it: 1e308 (a float, or the integer TOML's 1e308 became) as
    1e+308, not 309 digits; small numbers as they are."""
    if isinstance(v, bool) or not isinstance(v, int | float) or abs(v) < 1e15:
        return repr(v)
    try:
        return f"{float(v):g}"
    except OverflowError:                    # an integer past float's range
        return f"{'-' if v < 0 else ''}{str(abs(v))[0]}e+{len(str(abs(v))) - 1}"


def show_limit(v) -> str:
    """A bound as a message shows it: integers whole (16777216), floats short (1e+11)."""
    return str(v) if isinstance(v, int) else f"{v:g}"


def check_limit(key: str, value, where: str = "") -> None:
    """HardwareError naming ``key`` and ``value`` when it is outside :data:`HARDWARE_LIMITS`."""
    least, most = HARDWARE_LIMITS[key]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or (isinstance(value, float) and math.isnan(value)):
        problem = "must be a number"
    elif value < least:
        problem = f"must be at least {show_limit(least)}"
    elif value > most:
        problem = f"must be at most {show_limit(most)}"
    else:
        return
    raise HardwareError(f"{where}{': ' if where else ''}{key} {problem}, not {show_number(value)}")


# --- models -------------------------------------------------------------------------------------

def _builtin_models() -> dict:
    def llama(**kw):
        return ModelConfig(family="llama", norm_eps=1e-5, **kw)

    return {
        # GPT-2 small: Radford et al. 2019, Hugging Face "gpt2" config.json.
        "gpt2": ModelConfig(family="gpt2", vocab_size=50257, d_model=768, n_layers=12, n_heads=12,
                            n_kv_heads=12, head_dim=64, d_ff=3072, max_context=1024, tie_embeddings=True),
        # Llama 2: Touvron et al. 2023, "Llama 2: Open Foundation and Fine-Tuned Chat Models".
        "llama-2-7b": llama(vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                            head_dim=128, d_ff=11008, max_context=4096),
        "llama-2-70b": llama(vocab_size=32000, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                             head_dim=128, d_ff=28672, max_context=4096),
        # Llama 3 / 3.1: Meta, "The Llama 3 Herd of Models" (2024) and the models' config.json.
        "llama-3-8b": llama(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                            head_dim=128, d_ff=14336, max_context=8192, rope_theta=500000.0),
        "llama-3-70b": llama(vocab_size=128256, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                             head_dim=128, d_ff=28672, max_context=8192, rope_theta=500000.0),
        "llama-3.1-70b": llama(vocab_size=128256, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                               head_dim=128, d_ff=28672, max_context=131072, rope_theta=500000.0),
        # Llama 3.2 1B (Meta, September 2024, config.json): Llama 3's tokenizer, the natural small
        # draft model of the Llama 3 family (speculative decoding, sim/perf/speculative.py).
        "llama-3.2-1b": llama(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8,
                              head_dim=64, d_ff=8192, max_context=131072, rope_theta=500000.0,
                              tie_embeddings=True),
    }


MODELS = _builtin_models()
_MODEL_ALIASES = {"gpt2-124m": "gpt2", "gpt-2": "gpt2"}


def resolve_model(name_or_dir: str):
    """``(name, ModelConfig)`` of a built-in model (case-insensitive) or a checkpoint directory's
    config.json (only the configuration is read, no weights). Raises ValueError naming the choices."""
    key = str(name_or_dir).strip().lower()
    key = _MODEL_ALIASES.get(key, key)
    if key in MODELS:
        return key, MODELS[key]
    path = Path(name_or_dir)
    if path.is_dir():
        # The checkpoint's own reader: regular files only, size-capped, the same checks as a load.
        return path.name or str(path), load_config(path)
    raise InputError(f"unknown model {name_or_dir!r}: not a checkpoint directory nor one of "
                     f"{', '.join(MODELS)}")


def default_context(model_config) -> int:
    """Half the model's context, capped at :data:`DEFAULT_CONTEXT_CAP` (at least 1)."""
    return max(1, min(model_config.max_context, DEFAULT_CONTEXT_CAP) // 2)


@functools.lru_cache(maxsize=64)
def _program(model_config) -> tuple:
    return tuple(program_structure(model_config))


@functools.lru_cache(maxsize=64)
def _weight_elements(model_config) -> tuple[int, int]:
    """(elements of one layer, elements outside the layers) of the stored weights."""
    shapes = weight_shapes(model_config)
    layer = sum(_m.prod(s) for n, s in shapes.items() if n.startswith("layers.0."))
    total = sum(_m.prod(s) for s in shapes.values())
    return layer, total - model_config.n_layers * layer


def gemm_weight_bytes(model_config, weight_bytes: int = 1) -> int:
    """Bytes of GEMM weights one decode step streams through one chip's weight port: the cycle
    model's count (``OpCycles.weight_bytes``, K x N of every GEMM: the layers' projections and the
    LM head) at ``weight_bytes`` a weight. On one chip this is the estimate's
    ``weight_bytes_per_token``; ``lockstep inspect`` prints it inside its larger count of what a
    step reads (golden.quantize.weight_bytes' ``streamed_bytes_per_token`` adds the biases, the
    requantization and norm constants and the embedding row, which do not pass the weight port)."""
    d = decode_step_cycles(_program(model_config), model_config, DEFAULT, position=0)
    return sum(o.weight_bytes for o in d.ops) * weight_bytes


# --- tensor-parallel shards ---------------------------------------------------------------------

@dataclass(frozen=True)
class ShardShape:
    """The attention shape one chip of a tensor-parallel group sees (what decode_step_cycles reads)."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab: int


def shard_shape(model_config, tensor_parallel: int) -> ShardShape:
    """1/T of the heads (key/value heads first; when T exceeds them, one key/value head each,
    replicated, and ceil(heads / T) query heads), of the FFN width and of the vocabulary."""
    c, t = model_config, tensor_parallel
    if t <= c.n_kv_heads:
        kv = ceil_div(c.n_kv_heads, t)
        heads = kv * c.group_size
    else:
        kv, heads = 1, ceil_div(c.n_heads, t)
    return ShardShape(heads, kv, c.head_dim, ceil_div(c.d_ff, t), ceil_div(c.vocab_size, t))


def kv_split(model_config, tensor_parallel: int) -> int:
    """Ways a head's KV positions are split when a stage has more chips than query heads
    (``T // n_heads``; 1 otherwise): each chip holds and attends over 1/P of the positions and the
    P partial results (running max, sum and output row) are reduced over the links, one phase a
    layer (split-K attention, as GPU decoders do it at batch 1)."""
    return max(1, tensor_parallel // model_config.n_heads)


def local_position(position: int, split: int) -> int:
    """The position whose attention costs what one chip's share of ``position + 1`` rows costs."""
    return ceil_div((position + 1), split) - 1


_HEAD_VALUES = ("q", "q_rot", "attn")
_KV_VALUES = ("k", "v", "k_rot")
_FF_VALUES = ("gate", "up", "act", "prod")


@functools.lru_cache(maxsize=64)
def shard_program(model_config, tensor_parallel: int) -> tuple:
    """The integer program one chip of a T-chip tensor-parallel group runs: the ops of
    :func:`golden.quantize.program_structure` with the split widths (T = 1: the program itself)."""
    ops = _program(model_config)
    if tensor_parallel == 1:
        return ops
    s = shard_shape(model_config, tensor_parallel)
    out = []
    for op in ops:
        name = op.output.split(".", 1)[1] if op.layer is not None else op.output
        width = op.width
        if op.layer is not None and name in _HEAD_VALUES:
            width = s.n_heads * s.head_dim
        elif op.layer is not None and name in _KV_VALUES:
            width = s.n_kv_heads * s.head_dim
        elif op.layer is not None and name in _FF_VALUES:
            width = s.d_ff
        elif op.layer is None and name == "logits":
            width = s.vocab
        out.append(replace(op, width=width) if width != op.width else op)
    return tuple(out)


# --- two-dimensional GEMM split ------------------------------------------------------------------

#: Bytes of one partial sum sent over a link: a K-split GEMM's chips reduce their int32 (int8
#: weights) or fp32 (16-bit weights) accumulators, not the requantized outputs.
PSUM_BYTES = 4


@dataclass(frozen=True)
class GemmSplit:
    """How one GEMM (of every layer, or the LM head) is split over the T chips of a stage: its K
    rows ``a`` ways and its N columns ``b`` ways (a * b <= T), each chip holding one
    ``k_shard x n_shard`` block. ``layout`` is "1-D" (Megatron's, the shard program's shape) or "2-D"."""

    name: str
    k: int
    n: int
    a: int
    b: int
    k_shard: int
    n_shard: int
    layout: str
    cycles: float                      # the shard's op_cycles (re-priced at M = batch)


@dataclass(frozen=True)
class ShardPlan:
    """The GEMM splits of one stage and the link time their collectives cost."""

    splits: tuple[GemmSplit, ...]      # layer 0's GEMMs, then those outside the layers
    layer_link_s: float                # collectives of one layer
    other_link_s: float                # collectives outside the layers (LM head)
    layer_phases: int                  # link phases (latencies paid) per layer
    other_phases: int                  # link phases outside the layers

    def shapes(self, ops) -> dict:
        """``{output value: (K, N)}`` of every GEMM of ``ops`` (all layers) for :func:`batched_step_cycles`."""
        by_name = {s.name: (s.k_shard, s.n_shard) for s in self.splits}
        return {op.output: by_name[_value_name(op)] for op in ops if op.op == "gemm"}


def _value_name(op) -> str:
    return op.output.split(".", 1)[1] if op.layer is not None else op.output


def _gemm_groups(ops) -> list[list[tuple]]:
    """Layer 0's GEMMs and those outside the layers, as (op, K) in groups that share one input
    (Q, K and V; gate and up): a group's collectives run together, one latency for all."""
    widths = {"token": 1, "position": 1}
    groups: list[list[tuple]] = []
    for op in ops:
        k = widths.get(op.inputs[0], 0) if op.inputs else 0
        widths[op.output] = op.width
        if op.op != "gemm" or (op.layer is not None and op.layer != 0):
            continue
        if groups and groups[-1][0][0].inputs[0] == op.inputs[0]:
            groups[-1].append((op, k))
        else:
            groups.append([(op, k)])
    return groups


def _k_ways(k: int, limit: int):
    """The K-split counts worth pricing: for each block height ``ceil(k / a)`` the smallest ``a``
    that gives it (a larger ``a`` with the same height leaves fewer N ways, so wider blocks, and
    more partial sums to reduce: never faster). O(sqrt(k)) of them, not ``min(k, limit)``: a
    wafer of 900,000 cores would otherwise price every a up to K."""
    a = 1
    while a <= min(k, limit):
        yield a
        height = ceil_div(k, a)
        if height == 1:
            return
        a = ceil_div(k, (height - 1))


@functools.lru_cache(maxsize=256)
def shard_plan(model_config, hw, *, port: float, batch: int = 1) -> ShardPlan:
    """Split every GEMM of a stage over its T chips, group by group, the faster of two layouts:

    * **1-D** (Megatron, :func:`shard_program`): Q, K, V, gate, up and the LM head by output
      columns (each chip its heads' / FFN slice's columns: no link traffic), O and down by input
      rows (the chip's heads / FFN slice), then an all-reduce of the residual (reduce-scatter of
      partial sums + all-gather).
    * **2-D**: each GEMM's K split ``a`` ways and N ``b`` ways, ``a * b <= T``, ``a`` chosen for the
      least time of the shard (``op_cycles`` of a ``ceil(K/a) x ceil(N/b)`` GEMM) plus its link
      phases: an all-gather of a sliced input (attention output, FFN product) to every chip; a
      reduce-scatter of the K-split partial sums (or, with ``a = 1``, a scatter of the outputs) to
      the chips that own them next (heads, FFN slice, vocabulary slice); an all-gather of the
      residual-bound outputs (O, down).

    A link phase costs ``latency + bytes / bandwidth`` on ``[tp_link]`` (a fully connected group:
    reduce-scatter (a-1)/a and all-gather (T-1)/T of a vector per chip); phases of one group's
    GEMMs are merged (one latency, their bytes summed). ``port`` is the cycle model's
    weight_bytes_per_cycle; ``batch`` scales the bytes and re-prices the shards at M = batch.
    """
    T, tl, clock = hw.tensor_parallel, hw.tp_link, hw.clock_hz
    config = hw.config(batch)
    q_bytes = hw.weight_bytes * batch
    full, shard = _gemm_groups(_program(model_config)), _gemm_groups(shard_program(model_config, T))

    def cycles(k, n):
        return _gemm_op_cycles(config, k, n, port=port, batch=batch).cycles

    def phase_s(slots: dict) -> float:
        return sum(tl.latency_s + b / tl.bandwidth_bytes_per_s for b in slots.values())

    def merge(parts) -> dict:
        out: dict = {}
        for slots in parts:
            for key, b in slots.items():
                out[key] = out.get(key, 0.0) + b
        return out

    splits, link_s, phases = [], {True: 0.0, False: 0.0}, {True: 0, False: 0}
    for group, sgroup in zip(full, shard, strict=True):
        one_d, two_d = [], []
        for (op, k), (sop, sk) in zip(group, sgroup, strict=True):
            n, name = op.width, _value_name(op)
            in_sliced, out_sliced = sk != k, sop.width != n
            # 1-D: the shard program's block, an all-reduce when the output goes back to the residual.
            slots = {} if out_sliced or not in_sliced else {
                "reduce": (T - 1) / T * n * PSUM_BYTES * batch, "gather": (T - 1) / T * n * q_bytes}
            one_d.append((GemmSplit(name, k, n, ceil_div(k, sk), ceil_div(n, sop.width), sk, sop.width, "1-D",
                                    cycles(sk, sop.width)), slots))
            best = None
            for a in _k_ways(k, T):
                b = min(T // a, n)
                ks, ns = ceil_div(k, a), ceil_div(n, b)
                slots = {"in": (T - 1) / T * k * q_bytes} if in_sliced else {}
                if out_sliced or a > 1:
                    slots["reduce"] = ((a - 1) / a * ns * PSUM_BYTES * batch) if a > 1 else ns * q_bytes
                if not out_sliced:
                    slots["gather"] = (T - 1) / T * n * q_bytes
                c = cycles(ks, ns)
                key = (c / clock + phase_s(slots), c, a)
                if best is None or key < best[0]:
                    best = (key, GemmSplit(name, k, n, a, b, ks, ns, "2-D", c), slots)
            two_d.append(best[1:])
        options = []
        for members in (one_d, two_d):
            slots = merge(s for _, s in members)
            options.append((sum(g.cycles for g, _ in members) / clock + phase_s(slots), len(slots),
                            [g for g, _ in members], phase_s(slots)))
        _, n_phases, chosen, link = min(options, key=lambda o: o[0])   # ties: 1-D, the first
        splits += chosen
        in_layer = group[0][0].layer is not None
        link_s[in_layer] += link
        phases[in_layer] += n_phases
    return ShardPlan(tuple(splits), link_s[True], link_s[False], phases[True], phases[False])


# --- the cycle model, asked ----------------------------------------------------------------------

def _gemm_op_cycles(config, k: int, n: int, *, port: float | None, batch: int = 1):
    """``op_cycles`` of a K x N GEMM instruction, re-priced at M = ``batch`` activation rows (the
    batch hook: ``gemm_cycles(m=batch) - gemm_cycles(m=1)`` added)."""
    c = op_cycles("gemm", config, width=n, in_width=k, weight_bytes_per_cycle=port)
    if batch == 1:
        return c
    extra = (gemm_cycles(config, batch, k, n, weight_bytes_per_cycle=port).total
             - gemm_cycles(config, 1, k, n, weight_bytes_per_cycle=port).total)
    return replace(c, cycles=c.cycles + extra)


def batched_step_cycles(ops, shape, config, *, position: int, weight_bytes_per_cycle: float | None,
                        batch: int = 1, gemm_shapes: dict | None = None):
    """(cycles, bounds in cycles, GEMM instructions, weight elements, cycles per op kind) of one
    decode step for ``batch`` sequences (the op kinds' cycles sum to the step's).

    ``decode_step_cycles`` of ``ops``, one count per instruction the compiler emits (GEMMs that read
    one input merged: :func:`sim.machine.schedule.instruction_groups`); a GEMM named in
    ``gemm_shapes`` (output value -> (K, N), a 2-D shard, see :func:`shard_plan`) is priced at that
    shape instead of the (input width, output width) the program gives it, and merges by it. The
    batch hook (not confirmed by the RTL, which runs batch 1): every GEMM instruction re-priced by
    ``gemm_cycles`` with ``m = batch`` (B activation rows stream through each weight tile), every
    other instruction repeated once per further sequence (the sequencer issues them per sequence).
    Every bound (``DecodeCycles.bounds``) but the weight port's scales by B.
    """
    d = decode_step_cycles(ops, shape, config, position=position, weight_bytes_per_cycle=weight_bytes_per_cycle,
                           gemm_shapes=gemm_shapes)
    kinds: dict[str, float] = {}
    for o in d.ops:
        kinds[o.op] = kinds.get(o.op, 0) + o.cycles
    gemms = sum(1 for o in d.ops if o.op == "gemm")
    weights = sum(o.weight_bytes for o in d.ops)
    # Every bound but the weight port's scales with the sequences (B activation rows a tile).
    bounds = {k: v if k == "weight port" else v * batch for k, v in d.bounds.items()}
    if batch == 1:
        return d.total, bounds, gemms, weights, kinds
    extra, memo = 0, {}
    for g, oc in zip(instruction_groups(ops, config, gemm_shapes=gemm_shapes), d.ops, strict=True):
        if g.op == "gemm":
            k, n = g.in_width, g.width
            if (k, n) not in memo:   # every layer asks the same shapes
                memo[k, n] = _gemm_op_cycles(config, k, n, port=weight_bytes_per_cycle, batch=batch).cycles
            more = memo[k, n] + (residual_cycles(config) if g.residual is not None else 0) - oc.cycles
        else:
            more = (batch - 1) * oc.cycles
        extra += more
        kinds[oc.op] += more
    return d.total + extra, bounds, gemms, weights, kinds


def sum_local_positions(context: int, split: int) -> int:
    """``sum(local_position(p, split) for p in range(context))`` in closed form (the loop took 3.5 s
    at 10**7 positions on the project's machine): with context = a * split + b, ceil((p + 1) / split)
    is j for split positions of each j <= a and a + 1 for the last b."""
    a, b = divmod(context, split)
    return split * a * (a + 1) // 2 + b * (a + 1) - context


def step_cycles(ops, shape, config, *, context: int, weight_bytes_per_cycle: float | None, batch: int = 1,
                gemm_shapes: dict | None = None, split: int = 1):
    """Mean (cycles, bounds, GEMM count, weight elements, cycles per op kind) of a step over positions
    0..context-1.

    Exact: the cycle model is affine in the position (attention only), so the mean is the first
    position's prediction plus the slope times the mean position. With the KV positions split
    ``split`` ways (:func:`kv_split`) a chip attends over :func:`local_position` of each position."""
    kw = dict(weight_bytes_per_cycle=weight_bytes_per_cycle, batch=batch, gemm_shapes=gemm_shapes)
    first = batched_step_cycles(ops, shape, config, position=0, **kw)
    top = local_position(context - 1, split)
    if top == 0:
        return first
    last = batched_step_cycles(ops, shape, config, position=top, **kw)
    mean = sum_local_positions(context, split) / context / top
    bounds = {k: first[1][k] + (last[1][k] - first[1][k]) * mean for k in first[1]}
    kinds = {k: first[4][k] + (last[4][k] - first[4][k]) * mean for k in first[4]}
    return first[0] + (last[0] - first[0]) * mean, bounds, first[2], first[3], kinds


# --- hardware descriptions ----------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryLevel:
    """Where weights may live, per chip: capacity (bytes), bandwidth (bytes/s), latency (s)."""

    name: str
    capacity_bytes: float
    bandwidth_bytes_per_s: float
    latency_s: float = 0.0
    holds_kv: bool = False        # the KV cache shares this level's capacity (a GPU's HBM, an SRAM chip)

    def __post_init__(self):
        # math.inf capacity or bandwidth: unlimited, a modelling device of code (a TOML file's
        # numbers are finite); everything else within HARDWARE_LIMITS.
        for key in ("capacity_bytes", "bandwidth_bytes_per_s", "latency_s"):
            v = getattr(self, key)
            if not (v == math.inf and key != "latency_s"):
                check_limit(key, v, f"memory {self.name}")


@dataclass(frozen=True)
class Link:
    """A chip-to-chip link: bandwidth (bytes/s) and latency (s) of one hop."""

    bandwidth_bytes_per_s: float
    latency_s: float

    def __post_init__(self):
        if self.bandwidth_bytes_per_s != math.inf:          # inf: a free link (code only)
            check_limit("bandwidth_bytes_per_s", self.bandwidth_bytes_per_s, "link")
        check_limit("latency_s", self.latency_s, "link")


@dataclass(frozen=True)
class Hardware:
    """One hardware description (a TOML preset or file; see docs/performance.md for the keys)."""

    name: str
    description: str
    array_rows: int
    array_cols: int
    vector_lanes: int
    clock_hz: float
    weight_bytes: int
    memories: tuple[MemoryLevel, ...]
    chips: int = 1
    tensor_parallel: int = 1
    link: Link | None = None
    tp_link: Link | None = None
    notes: tuple[str, ...] = field(default=())
    attention_finish_lanes: int = 0      # 0: all of a head's lanes at once (Config.attention_finish_lanes)
    weight_rows_per_cycle: int = 1       # G: tile rows the weight port delivers a cycle (Config's)
    layernorm: bool = True               # the vector unit builds LayerNorm (Config's): no cycle
    fused_swiglu: bool = False           # SwiGLU's activation and multiply one instruction (Config's)
    fused_rope: bool = False             # RoPE of every head (q's and k's) one command (Config's)
    fused_residual: bool = False         # residual adds fused into the GEMM's output stage (Config's)
    attention_heads_per_step: int = 1    # P: query heads of a KV group per attention step (Config's)
    gemm_product_register: bool = False  # the GEMM output stage's product and write registers (Config's): +2 a GEMM
    vector_scalar_register: bool = False  # vector scalars latched a cycle early (Config's): +1 a vector op
    vector_product_register: bool = False  # vector reads and products registered (Config's): +3 a vector op, +4 an
    #                                        RMSNorm, +6 a LayerNorm
    fabric_products: bool = False        # int8 products in logic, not multipliers (Config's): no cycle
    attention_timing_registers: bool = False  # attention's timing registers (Config's): +6 an attention call
    residual_timing_registers: bool = False  # the fused residual add's two registers (Config's): +2 a fused GEMM
    embed_register: bool = False          # EMBED's first address and words registered (Config's): +2 an EMBED
    program_register: bool = False        # DECODE's instruction registered (Config's): +1 a pass (FETCH)
    attention_rescale_register: bool = False  # attention's S4 in two stages (Config's): +1 a call, +1 a step
    #                                           after the first when a group is one step a position

    def __post_init__(self):
        # However it is made (a TOML file, a sweep point, dataclasses.replace): within HARDWARE_LIMITS.
        for key in ("array_rows", "array_cols", "vector_lanes", "attention_finish_lanes", "weight_rows_per_cycle",
                    "clock_hz", "chips", "tensor_parallel", "attention_heads_per_step"):
            check_limit(key, getattr(self, key), self.name)
        if self.weight_bytes not in (1, 2):
            raise HardwareError(f"{self.name}: weight_bytes must be 1 (int8) or 2 (bf16/fp16), "
                                f"not {show_number(self.weight_bytes)}")
        if self.chips % self.tensor_parallel:
            raise HardwareError(f"{self.name}: tensor_parallel ({self.tensor_parallel}) must divide chips "
                                f"({self.chips})")
        problem = weight_rows_problem(self.array_rows, self.weight_rows_per_cycle)
        if problem:
            raise HardwareError(f"{self.name}: {problem}")
        for key in BOOL_KEYS:
            if not isinstance(getattr(self, key), bool):
                raise HardwareError(f"{self.name}: {key} must be true or false, not {getattr(self, key)!r}")

    @property
    def port_elements_per_cycle(self) -> int:
        """Weights the array's weight port takes a cycle: G rows of C (``Config.weight_port_bytes`` for
        int8), whatever the memory behind it delivers."""
        return self.weight_rows_per_cycle * self.array_cols

    @property
    def stages(self) -> int:
        return self.chips // self.tensor_parallel

    @property
    def peak_macs_per_s(self) -> float:
        """One chip's MAC/s: R * C * clock."""
        return self.array_rows * self.array_cols * self.clock_hz

    @property
    def peak_ops_per_s(self) -> float:
        """One chip's peak in operations/s as vendors count them (a MAC is two)."""
        return 2 * self.peak_macs_per_s

    def config(self, batch: int = 1):
        """The :class:`hdl.config.Config` the cycle model is asked about (only the array, the
        vector lanes and the clock enter the decode cycles; memories are sized not to object)."""
        m = max(DEFAULT.max_m, batch)
        g = self.weight_rows_per_cycle
        return replace(DEFAULT, array_rows=self.array_rows, array_cols=self.array_cols,
                       vector_lanes=self.vector_lanes, clock_hz=max(1, round(self.clock_hz)), max_m=m,
                       attention_finish_lanes=self.attention_finish_lanes, weight_rows_per_cycle=g,
                       attention_heads_per_step=self.attention_heads_per_step,
                       **{key: getattr(self, key) for key in BOOL_KEYS},
                       act_words=max(DEFAULT.act_words, m), result_words=max(DEFAULT.result_words, m),
                       weight_words=ceil_div(max(DEFAULT.weight_words, self.array_rows), g) * g)


def _number(source, table, key, *, kind=float, required=True, default=None, positive=True):
    """``table[key]`` checked: a finite number (an integer for ``kind=int``), positive (or
    non-negative), and within :data:`HARDWARE_LIMITS` for the keys it bounds."""
    if key not in table:
        if required:
            raise HardwareError(f"{source}: missing key {key!r}")
        return default
    v = table[key]
    what = "an integer" if kind is int else "a finite number"
    if (isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not math.isfinite(v))
            or (kind is int and isinstance(v, float) and not v.is_integer())):
        raise HardwareError(f"{source}: {key} must be {what}, not {show_number(v)}")
    v = kind(v)
    if (positive and v <= 0) or (not positive and v < 0):
        raise HardwareError(f"{source}: {key} must be {'positive' if positive else 'non-negative'}, "
                            f"not {show_number(v)}")
    if key in HARDWARE_LIMITS:
        check_limit(key, v, source)
    return v


def _table(source, data, key, known, required=True):
    t = data.get(key)
    if t is None:
        if required:
            raise HardwareError(f"{source}: missing table [{key}]")
        return None
    if not isinstance(t, dict):
        raise HardwareError(f"{source}: [{key}] must be a table, not {t!r}")
    unknown = sorted(set(t) - set(known))
    if unknown:
        raise HardwareError(f"{source}: unknown key {unknown[0]!r} in [{key}] (known: {', '.join(known)})")
    return t


def _link(source, data, key):
    t = _table(source, data, key, ("bandwidth_bytes_per_s", "latency_s"), required=False)
    if t is None:
        return None
    return Link(_number(f"{source} [{key}]", t, "bandwidth_bytes_per_s"),
                _number(f"{source} [{key}]", t, "latency_s", positive=False))


#: The [chip] keys the performance model reads.
_CHIP_KEYS = ("array_rows", "array_cols", "vector_lanes", "clock_hz", "weight_bytes", "attention_finish_lanes",
              "weight_rows_per_cycle", "attention_heads_per_step", *BOOL_KEYS)
#: The [chip] keys only the RTL reads (its Config's other fields, and the weight memory's capacity).
_RTL_ONLY_KEYS = tuple(sorted((set(Config.__dataclass_fields__) | set(CHIP_EXTRA_KEYS)) - set(_CHIP_KEYS)))
#: Every key a design's [chip] table may hold, in the order an error lists them.
CHIP_TABLE_KEYS = _CHIP_KEYS + _RTL_ONLY_KEYS


def _rtl_weight_memory(chip: dict, source: str) -> list[MemoryLevel]:
    """The first memory level of a design whose [chip] sizes its int8 weight memory (``weight_words``
    or ``weight_memory_bytes``): that memory, ``weight_words`` words of ``array_cols`` int8, read
    ``weight_rows_per_cycle`` words a cycle (``Config.weight_port_bytes``; the chip's configuration
    checked: its error names the key). Empty for any other design (its [[memory]] levels say where
    weights live)."""
    if not {"weight_words", "weight_memory_bytes"} & set(chip) or chip.get("weight_bytes", 1) != 1:
        return []
    c = chip_config(chip, source=source)
    return [MemoryLevel("weight memory", c.weight_words * c.array_cols, c.weight_port_bytes * c.clock_hz)]


def hardware_from_dict(data: dict, *, name: str = "hardware", source: str = "hardware") -> Hardware:
    """Build and check a :class:`Hardware` from parsed TOML (see docs/performance.md)."""
    top = ("name", "description", "notes", "chip", "memory", "system", "link", "tp_link")
    unknown = sorted(set(data) - set(top))
    if unknown:
        raise HardwareError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(top)})")
    # [chip] is the RTL's configuration too (sim.design): its Config keys are the RTL's business and
    # are checked there; the model reads the keys of _CHIP_KEYS.
    chip = _table(source, data, "chip", CHIP_TABLE_KEYS)
    s = f"{source} [chip]"
    rows = _number(s, chip, "array_rows", kind=int)
    cols = _number(s, chip, "array_cols", kind=int)
    wb = _number(s, chip, "weight_bytes", kind=int, required=False, default=1)
    finish = _number(s, chip, "attention_finish_lanes", kind=int, required=False, default=0, positive=False)
    rows_per_cycle = _number(s, chip, "weight_rows_per_cycle", kind=int, required=False, default=1)
    heads_per_step = _number(s, chip, "attention_heads_per_step", kind=int, required=False, default=1)
    if wb not in (1, 2):
        raise HardwareError(f"{s}: weight_bytes must be 1 (int8) or 2 (bf16/fp16), not {show_number(wb)}")
    switches = {}
    for key in BOOL_KEYS:
        switches[key] = chip.get(key, getattr(DEFAULT, key))
        if not isinstance(switches[key], bool):
            raise HardwareError(f"{s}: {key} must be true or false, not {switches[key]!r}")
    clock = _number(s, chip, "clock_hz")          # checked before a memory level is derived from it
    levels = _rtl_weight_memory(chip, s)
    mem = data.get("memory", [] if levels else None)
    if not isinstance(mem, list) or not (mem or levels) or not all(isinstance(m, dict) for m in mem):
        raise HardwareError(f"{source}: at least one [[memory]] level (name, capacity_bytes, "
                            f"bandwidth_bytes_per_s) is required")
    for i, m in enumerate(mem):
        known = ("name", "capacity_bytes", "bandwidth_bytes_per_s", "latency_s", "holds_kv")
        unknown = sorted(set(m) - set(known))
        if unknown:
            raise HardwareError(f"{source}: unknown key {unknown[0]!r} in [[memory]] #{i + 1} (known: "
                                f"{', '.join(known)})")
        ms = f"{source} [[memory]] #{i + 1}"
        if not isinstance(m.get("name"), str) or not m["name"]:
            raise HardwareError(f"{ms}: name must be a non-empty string")
        if not isinstance(m.get("holds_kv", False), bool):
            raise HardwareError(f"{ms}: holds_kv must be true or false, not {m['holds_kv']!r}")
        levels.append(MemoryLevel(m["name"], _number(ms, m, "capacity_bytes"),
                                  _number(ms, m, "bandwidth_bytes_per_s"),
                                  _number(ms, m, "latency_s", required=False, default=0.0, positive=False),
                                  m.get("holds_kv", False)))
    system = _table(source, data, "system", ("chips", "tensor_parallel"), required=False) or {}
    chips = _number(f"{source} [system]", system, "chips", kind=int, required=False, default=1)
    tp = _number(f"{source} [system]", system, "tensor_parallel", kind=int, required=False, default=1)
    if chips % tp:
        raise HardwareError(f"{source} [system]: tensor_parallel ({tp}) must divide chips ({chips})")
    link, tp_link = _link(source, data, "link"), _link(source, data, "tp_link")
    if chips > 1 and link is None:
        raise HardwareError(f"{source}: {chips} chips need a [link] (bandwidth_bytes_per_s, latency_s)")
    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise HardwareError(f"{source}: notes must be a list of strings")
    return Hardware(name=str(data.get("name", name)), description=str(data.get("description", "")),
                    array_rows=rows, array_cols=cols, vector_lanes=_number(s, chip, "vector_lanes", kind=int),
                    clock_hz=clock, weight_bytes=wb, memories=tuple(levels), chips=chips,
                    tensor_parallel=tp, link=link, tp_link=tp_link or link, notes=tuple(notes),
                    attention_finish_lanes=finish, weight_rows_per_cycle=rows_per_cycle,
                    attention_heads_per_step=heads_per_step, **switches)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def read_toml(path, what: str, error: type[Exception]) -> dict:
    """The tables of the TOML file at ``path`` (``what`` it is, for the messages), read with
    :func:`read_text`'s checks; ``error`` in one line naming the path when it is missing, unreadable
    or not TOML."""
    try:
        return tomllib.loads(read_text(path, what))
    except FileNotFoundError:
        raise error(f"{path}: no such {what.removeprefix('a ')}") from None
    except OSError as exc:
        raise error(str(exc) if str(exc).startswith(str(path)) else f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


@functools.lru_cache(maxsize=32)
def _read_toml(path: str) -> dict:
    return read_toml(path, "a hardware description", HardwareError)


def _resolve(preset_or_path: str) -> tuple[str, str]:
    """(TOML path, name) of a design's name or a TOML file path."""
    key = str(preset_or_path)
    if (PRESET_DIR / f"{key}.toml").is_file():
        return str(PRESET_DIR / f"{key}.toml"), key
    p = Path(key)
    if p.suffix == ".toml" or p.exists():
        return str(p), p.stem
    raise HardwareError(f"unknown design {key!r}: not a TOML file nor one of {', '.join(list_presets())}")


@functools.lru_cache(maxsize=32)
def _load_path(path: str, name: str) -> Hardware:
    return hardware_from_dict(_read_toml(path), name=name, source=Path(path).name)


def hardware_data(preset_or_path: str) -> tuple[dict, str]:
    """A fresh copy of a hardware description's TOML tables, and its name (what a sweep point
    starts from before its own parameters replace keys)."""
    path, name = _resolve(preset_or_path)
    return copy.deepcopy(_read_toml(path)), name


def load_hardware(preset_or_path: str) -> Hardware:
    """The hardware of a design by name (``hdl/designs/NAME.toml``) or of a TOML file by path."""
    return _load_path(*_resolve(preset_or_path))


# --- the estimate -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """One estimate; times are seconds per decode step (one token of each of ``batch`` sequences)."""

    model: str
    hardware: str
    context: int
    batch: int
    chips: int
    stages: int
    tensor_parallel: int
    weight_bytes_total: float          # bytes of the stored weights, at the hardware's element size
    weight_bytes_per_chip: float       # on the most loaded chip (the pipeline stage with the LM head)
    weight_bytes_per_token: float      # GEMM weights through the weight port of one chip per stage, summed
                                       # over stages (no biases, requantization or norm constants)
    memory: str                        # the level that holds the weights
    port_elements_per_cycle: float     # weight_bytes_per_cycle given to the cycle model (elements)
    cycles: float                      # decode_step_cycles (mean over the context), one chip per stage
    compute_seconds: float             # cycles / clock
    memory_latency_seconds: float
    link_seconds: float
    step_seconds: float
    tokens_per_s: float                # batch / step_seconds
    bounds: dict                       # name -> seconds per step (roofline)
    peak_ops_per_s: float              # one chip, 2 * R * C * clock
    system_peak_ops_per_s: float
    splits: tuple = ()                 # GemmSplit of each GEMM of a layer and the LM head (multi-chip)
    kv_bytes_per_chip: float = 0.0     # KV cache a chip holds at the end of the context
    kv_placed: bool = False            # whether it shares the weights' memory level (holds_kv)
    kv_split: int = 1                  # chips a head's positions are split over (attention)
    cycles_by_op: dict = field(default_factory=dict)   # op kind -> mean cycles a step (they sum to cycles)

    @property
    def lower_bound(self) -> float:
        return max(self.bounds.values())

    @property
    def efficiency(self) -> float:
        return self.lower_bound / self.step_seconds

    @property
    def binding(self) -> str:
        return max(self.bounds, key=self.bounds.get)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(lower_bound=self.lower_bound, efficiency=self.efficiency, binding=self.binding,
                 shares={k: v / self.step_seconds for k, v in self.bounds.items()})
        return d


def kv_cache_bytes(model_config, hw: Hardware, *, context: int, batch: int = 1) -> float:
    """Bytes of KV cache a chip holds at the end of ``context`` positions for ``batch`` sequences:
    its stage's layers, K and V of every key/value head at the weights' width (int8 designs keep
    an int8 cache, 16-bit ones a 16-bit cache), spread over the stage's chips: an average a chip,
    as the weights' ``per_chip`` is."""
    layers = ceil_div(model_config.n_layers, hw.stages)
    c = model_config
    return layers * context * c.n_kv_heads * c.head_dim * 2 * hw.weight_bytes * batch / hw.tensor_parallel


def place(mc, hw: Hardware, *, context: int, batch: int = 1, name: str = "the model"
          ) -> tuple[MemoryLevel, float, float]:
    """(the memory level that holds the weights, weight bytes a chip, KV-cache bytes a chip): the
    first level holding the chip's share of the weights (and the KV cache, if ``holds_kv``);
    HardwareError in one line when none does."""
    T, S = hw.tensor_parallel, hw.stages
    if mc.n_layers < S:
        raise HardwareError(f"{hw.name}: {S} pipeline stages for {mc.n_layers} layers: a stage needs at least "
                            f"one layer (raise tensor_parallel)")
    layer, other = _weight_elements(mc)
    per_chip = (ceil_div(mc.n_layers, S) * layer + other) * hw.weight_bytes / T
    kv = kv_cache_bytes(mc, hw, context=context, batch=batch)
    home = next((m for m in hw.memories if m.capacity_bytes >= per_chip + (kv if m.holds_kv else 0)), None)
    if home is None:
        levels = ", ".join(f"{m.name} {_bytes(m.capacity_bytes)}" for m in hw.memories)
        where = "per chip" if hw.chips > 1 else ""
        cache = (f" and {_bytes(kv)} of KV cache (context {context}, batch {batch})"
                 if any(m.holds_kv for m in hw.memories) else "")
        raise HardwareError(f"{name} needs {_bytes(per_chip)} of weights {where}".rstrip() +
                            f" ({'int8' if hw.weight_bytes == 1 else '16-bit'}){cache}, more than every memory "
                            f"level of {hw.name} ({levels})")
    return home, per_chip, kv


def check_workload(mc, *, context: int, batch: int, name: str = "the model") -> None:
    """ValueError naming the value when ``context`` or ``batch`` is not a positive integer, the
    context exceeds the model's ``max_context`` (at most ``golden.model.MAX_CONTEXT``), or the batch
    :data:`MAX_BATCH`: refused before any work (the estimate's cost grows with the layers, at most
    ``golden.model.MAX_LAYERS``, not with context or batch)."""
    for n, v in (("context", context), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{n} must be a positive integer, not {show_number(v)}")
    if context > mc.max_context:
        raise InputError(f"context {show_number(context)} exceeds {name}'s max_context {mc.max_context}")
    if batch > MAX_BATCH:
        raise InputError(f"batch {show_number(batch)} exceeds the estimate's largest batch {MAX_BATCH}")


def _check_finite(e: Estimate) -> Estimate:
    """The estimate, or HardwareError naming the first number that is not finite (every input is
    bounded, so this is the last guard: JSON has no Infinity, and a sweep must not store one)."""
    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                yield from walk(f"{prefix}[{k!r}]", x)
        elif isinstance(v, float) and not math.isfinite(v):
            yield prefix, v
    for name, value in e.as_dict().items():
        for where, bad in walk(name, value):
            raise HardwareError(f"{e.model} on {e.hardware}: the estimate's {where} is {bad} (not finite): "
                                f"a hardware number is out of range")
    return e


def _att_link_seconds(mc, hw: Hardware, *, split: int, batch: int) -> float:
    """Link time a step spends reducing split attention (``split`` > 1 ways): one phase a layer,
    the partial results (running max, sum and output row, :data:`PSUM_BYTES` each) of ``batch`` rows."""
    if split == 1:
        return 0.0
    return mc.n_layers * (hw.tp_link.latency_s + (split - 1) / split * (mc.head_dim + 2) * PSUM_BYTES * batch
                          / hw.tp_link.bandwidth_bytes_per_s)


def _pass_overheads(mc, hw: Hardware, home: MemoryLevel, plan: ShardPlan | None, *, gemms: int, batch: int,
                    att_link: float) -> tuple[float, float]:
    """(memory latency, link seconds) of one pass of ``batch`` rows: a latency of the weights'
    level per GEMM; one hop a pipeline-stage boundary (``batch`` activation rows), the GEMMs'
    collectives (``plan``, priced at ``batch`` rows), one gather of the argmax candidates and the
    split attention's reduction (``att_link``)."""
    mem_latency = gemms * home.latency_s
    link_s = 0.0
    if hw.stages > 1:
        act_bytes = mc.d_model * hw.weight_bytes * batch
        link_s += (hw.stages - 1) * (hw.link.latency_s + act_bytes / hw.link.bandwidth_bytes_per_s)
    if plan is not None:
        # The GEMMs' collectives (shard_plan), then one gather of the T argmax candidates.
        link_s += mc.n_layers * plan.layer_link_s + plan.other_link_s + hw.tp_link.latency_s + att_link
    return mem_latency, link_s


def estimate(model, hw: Hardware, *, context: int | None = None, batch: int = 1, name: str | None = None
             ) -> Estimate:
    """Estimate ``model`` (a built-in name, checkpoint directory or ModelConfig) on ``hw``."""
    if isinstance(model, ModelConfig):
        mname, mc = name or "model", model
    else:
        mname, mc = resolve_model(model)
    if context is None:
        context = default_context(mc)
    check_workload(mc, context=context, batch=batch, name=mname)
    T, S = hw.tensor_parallel, hw.stages
    home, per_chip, kv = place(mc, hw, context=context, batch=batch, name=mname)
    layer, other = _weight_elements(mc)
    total_bytes = (mc.n_layers * layer + other) * hw.weight_bytes
    config = hw.config(batch)
    port = min(float(hw.port_elements_per_cycle), home.bandwidth_bytes_per_s / hw.clock_hz / hw.weight_bytes)
    ops = shard_program(mc, T)
    shape = shard_shape(mc, T) if T > 1 else mc
    plan = shard_plan(mc, hw, port=port, batch=batch) if T > 1 else None
    clock = hw.clock_hz
    # Attention over all of a head's positions on each chip, or (more chips than query heads) split
    # over kv_split(...) chips plus one link phase a layer reducing the partial results (running
    # max, sum and output row, 4 bytes each): whichever is faster.
    choices = []
    for split in sorted({1, kv_split(mc, T)}):
        c = step_cycles(ops, shape, config, context=context, weight_bytes_per_cycle=port, batch=batch,
                        gemm_shapes=plan.shapes(ops) if plan else None, split=split)
        att_link = _att_link_seconds(mc, hw, split=split, batch=batch)
        choices.append((c[0] / clock + att_link, split, att_link, c))
    _, split, att_link, (cycles, bounds_c, gemms, weight_elements, kinds) = min(choices, key=lambda o: o[:2])
    compute_s = cycles / clock
    mem_latency, link_s = _pass_overheads(mc, hw, home, plan, gemms=gemms, batch=batch, att_link=att_link)
    step = compute_s + mem_latency + link_s
    # The cycle model's bounds (DecodeCycles.bounds): the array's MAC peak; the other units' minima
    # one after another. The port and the memory level count the weights themselves.
    bounds = {
        "compute": bounds_c["MAC peak"] / clock,
        "weight port": weight_elements / hw.port_elements_per_cycle / clock,
        f"memory ({home.name})": weight_elements * hw.weight_bytes / home.bandwidth_bytes_per_s,
        "units": sum(bounds_c[u] for u in ("attention", "vector", "sequencer")) / clock,
    }
    if hw.chips > 1:
        bounds["links"] = link_s
    return _check_finite(Estimate(
        model=mname, hardware=hw.name, context=context, batch=batch, chips=hw.chips, stages=S, tensor_parallel=T,
        weight_bytes_total=total_bytes, weight_bytes_per_chip=per_chip,
        weight_bytes_per_token=weight_elements * hw.weight_bytes, memory=home.name, port_elements_per_cycle=port,
        cycles=cycles, compute_seconds=compute_s, memory_latency_seconds=mem_latency, link_seconds=link_s,
        step_seconds=step, tokens_per_s=batch / step, bounds=bounds, peak_ops_per_s=hw.peak_ops_per_s,
        system_peak_ops_per_s=hw.peak_ops_per_s * hw.chips, splits=plan.splits if plan else (),
        kv_bytes_per_chip=kv, kv_placed=home.holds_kv, kv_split=split,
        cycles_by_op=dict(sorted(kinds.items(), key=lambda kv_: -kv_[1]))))


#: The most prompt tokens a prefill estimate takes (B x P rows): past it a number is a typo.
MAX_PREFILL_ROWS = 1 << 22


@dataclass(frozen=True)
class Prefill:
    """The prefill of ``batch`` prompts of ``prompt`` tokens each, in passes of at most ``chunk``
    rows (the prompts one after another, each a run of consecutive positions): its passes' cycles
    and seconds. The first sequence's first token comes out of the pass that holds its last prompt
    row (``first_seconds``), the last sequence's out of the last pass (``all_seconds``)."""

    prompt: int
    batch: int
    chunk: int
    passes: int
    cycles: float                      # every pass's cycles, summed
    first_seconds: float               # time to the first sequence's first token (TTFT)
    all_seconds: float                 # time to every sequence's first token
    kv_split: int = 1

    @property
    def tokens_per_s(self) -> float:
        """Prompt tokens read a second."""
        return self.prompt * self.batch / self.all_seconds

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tokens_per_s"] = self.tokens_per_s
        return d


def prefill(model, hw: Hardware, *, prompt: int, batch: int = 1, chunk: int = DEFAULT.max_m,
            name: str | None = None, split: int = 1) -> Prefill:
    """Estimate the prefill of ``batch`` prompts of ``prompt`` tokens on ``hw`` in passes of at most
    ``chunk`` rows (a design's ``max_m``), from the cycle model's pass: every GEMM instruction runs
    its M rows through each weight tile (``gemm_cycles(m=M)``), every other instruction once per row
    at the row's position (:func:`batched_step_cycles` at position 0, plus the attention's cost per
    position, the cycle model being affine in the position). Each pass pays the memory latency and
    link time a decode step of M rows pays. ``split``: the ways a head's positions are split over
    the chips (:func:`kv_split`; the decode estimate's choice)."""
    if isinstance(model, ModelConfig):
        mname, mc = name or "model", model
    else:
        mname, mc = resolve_model(model)
    for n, v in (("prompt", prompt), ("batch", batch), ("chunk", chunk)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{n} must be a positive integer, not {show_number(v)}")
    if prompt > mc.max_context:
        raise InputError(f"prompt {show_number(prompt)} exceeds {mname}'s max_context {mc.max_context}")
    if prompt * batch > MAX_PREFILL_ROWS:
        raise InputError(f"prefill of {batch} x {prompt} tokens: more than the estimate's {MAX_PREFILL_ROWS:,} rows")
    base = row_pass(mc, hw, context=prompt, batch=batch, split=split, name=mname)
    rows = prompt * batch
    passes = ceil_div(rows, chunk)
    cycles = seconds = 0.0
    first = None
    for i in range(passes):
        lo, hi = i * chunk, min(rows, (i + 1) * chunk)
        c0, slope, overhead = base(hi - lo)
        c = c0 + slope * _local_positions_between(lo, hi, prompt, split)
        cycles += c
        seconds += c / hw.clock_hz + overhead
        if first is None and hi >= prompt:
            first = seconds
    return Prefill(prompt=prompt, batch=batch, chunk=chunk, passes=passes, cycles=cycles, first_seconds=first,
                   all_seconds=seconds, kv_split=split)


def row_pass(model_config, hw: Hardware, *, context: int, batch: int = 1, split: int = 1,
             name: str = "the model"):
    """The cycle model's pass of M rows of ``model_config`` on ``hw`` (placed for ``context``
    positions of ``batch`` sequences): a function of M returning (cycles of the M rows at position
    0, cycles a row adds per position, overhead seconds). Every GEMM instruction runs its M rows
    through each weight tile (``gemm_cycles(m=M)``), every other instruction once per row
    (:func:`batched_step_cycles` at position 0; the cycle model is affine in the position, so a row
    at position p adds p times the slope); the overhead is the memory latency and link time of a
    pass of M rows (:func:`_pass_overheads`, attention split ``split`` ways). Used by
    :func:`prefill` (chunks of a prompt) and :mod:`sim.perf.speculative` (verify passes)."""
    mc = model_config
    T = hw.tensor_parallel
    home, _, _ = place(mc, hw, context=context, batch=batch, name=name)
    port = min(float(hw.port_elements_per_cycle), home.bandwidth_bytes_per_s / hw.clock_hz / hw.weight_bytes)
    ops = shard_program(mc, T)
    shape = shard_shape(mc, T) if T > 1 else mc

    @functools.lru_cache(maxsize=4)
    def base(m: int) -> tuple[float, float, float]:
        plan = shard_plan(mc, hw, port=port, batch=m) if T > 1 else None
        config = hw.config(m)
        kw = dict(weight_bytes_per_cycle=port, gemm_shapes=plan.shapes(ops) if plan else None)
        c0 = batched_step_cycles(ops, shape, config, position=0, batch=m, **kw)
        slope = (batched_step_cycles(ops, shape, config, position=1, **kw)[0]
                 - batched_step_cycles(ops, shape, config, position=0, **kw)[0])
        mem, link = _pass_overheads(mc, hw, home, plan, gemms=c0[2], batch=m,
                                    att_link=_att_link_seconds(mc, hw, split=split, batch=m))
        return c0[0], slope, mem + link

    return base


def _local_positions_between(lo: int, hi: int, prompt: int, split: int) -> int:
    """The sum of :func:`local_position` over rows ``lo..hi-1`` of prompts laid one after another
    (row r at position r mod ``prompt``), in closed form per prompt."""
    total, r = 0, lo
    while r < hi:
        start = r % prompt
        end = min(prompt, start + hi - r)
        total += sum_local_positions(end, split) - sum_local_positions(start, split)
        r += end - start
    return total


def format_prefill(p: Prefill) -> str:
    """The estimate's prefill lines (``lockstep estimate --prompt``)."""
    who = "" if p.batch == 1 else f"{count(p.batch)} prompts of "
    passes = f"{count(p.passes)} pass{'es' if p.passes != 1 else ''}"
    lines = [f"prefill  : {who}{count(p.prompt)} tokens in {passes} of at most {count(p.chunk)} rows "
             f"(chunked prefill), {count(p.cycles)} cycles",
             f"ttft     : {_seconds(p.first_seconds)} to the first token"
             + (f" of the first sequence, {_seconds(p.all_seconds)} of all {count(p.batch)}" if p.batch > 1 else "")
             + f" ({number(p.tokens_per_s)} prompt tokens/s)"]
    return "\n".join(lines)


def _bytes(n: float) -> str:
    return quantity(n, "B")


def _seconds(s: float) -> str:
    return quantity(s, "s")


def format_breakdown(e: Estimate) -> str:
    """Where an estimated step's cycles go, per op kind (the model's counterpart of ``run --profile``)."""
    lines = [f"per op kind (mean cycles a step over {e.context:,} positions, one chip per stage):"]
    for op, c in e.cycles_by_op.items():
        lines.append(f"  {op:14s} {number(c):>16s} cycles  {c / e.cycles:>6.1%}")
    lines.append(f"  {'total':14s} {number(e.cycles):>16s} cycles")
    return "\n".join(lines)


def format_estimate(e: Estimate, hw: Hardware) -> str:
    """The text report: the estimate and its roofline, each bound with its share of the step."""
    wt = "int8" if hw.weight_bytes == 1 else "16-bit"
    system = (f"{count(hw.chips)} chips ({e.stages} pipeline stages x {e.tensor_parallel} tensor-parallel), "
              if hw.chips > 1 else "")
    lines = [
        f"{e.model} on {hw.name}: {system}{hw.array_rows}x{hw.array_cols} array at {quantity(hw.clock_hz, 'Hz')}, "
        f"{count(hw.vector_lanes)} vector lanes, {wt} weights",
        f"context  : {count(e.context)} tokens (mean over positions 0..{e.context - 1}), batch {count(e.batch)}"
        + (" (batch > 1: the cycle model's pass of B rows, the RTL's passes equal it cycle for cycle)"
           if e.batch > 1 else ""),
        f"weights  : {_bytes(e.weight_bytes_total)} in all, {_bytes(e.weight_bytes_per_chip)} per chip in "
        f"{e.memory}; port {number(e.port_elements_per_cycle)} weights/cycle",
        f"kv cache : {_bytes(e.kv_bytes_per_chip)} per chip at position {count(e.context)}, "
        + (f"in {e.memory} beside the weights" if e.kv_placed else "in the accelerator's own KV memory (not placed)"),
    ]
    if e.splits:
        lines.append("split    : K ways x N ways (block per chip): " + ", ".join(
            f"{g.name} {g.a}x{g.b} ({g.k_shard}x{g.n_shard}{', 1-D' if g.layout == '1-D' else ''})"
            for g in e.splits))
    if e.kv_split > 1:
        lines.append(f"attention: a head's positions split over {count(e.kv_split)} chips "
                     f"(one more link phase a layer)")
    lines += [
        f"step     : {count(e.cycles)} cycles ({_seconds(e.compute_seconds)})"
        + (f" + memory latency {_seconds(e.memory_latency_seconds)}" if e.memory_latency_seconds else "")
        + (f" + links {_seconds(e.link_seconds)}" if e.link_seconds else "")
        + f" = {_seconds(e.step_seconds)} per token",
        f"tokens/s : {number(e.tokens_per_s)}" + (f" ({number(e.tokens_per_s / e.batch)} per sequence)"
                                              if e.batch > 1 else ""),
        f"roofline : peak {quantity(e.peak_ops_per_s, 'OPS')} per chip (2 x R x C x clock)"
        + (f", {quantity(e.system_peak_ops_per_s, 'OPS')} in all" if hw.chips > 1 else ""),
    ]
    for k, v in e.bounds.items():
        mark = "  <- binding" if k == e.binding else ""
        lines.append(f"  {k:22s} {_seconds(v):>9s}  {100 * v / e.step_seconds:5.1f} % of the step{mark}")
    lines.append(f"  {'efficiency':22s} {'':9s}  {100 * e.efficiency:5.1f} % (largest bound / step)")
    return "\n".join(lines)


# --- calibration against published chips --------------------------------------------------------

#: (what, model, hardware preset, published value, unit, where it was published). The context is
#: each model's default (half its context, at most 2048 here).
CALIBRATION = (
    ("TPU v1 peak", None, "tpu-v1", 92e12, "ops/s",
     "Jouppi et al., In-Datacenter Performance Analysis of a Tensor Processing Unit (ISCA 2017): 92 TOPS"),
    ("A100 40 GB, Llama-2-7B bf16, batch 1", "llama-2-7b", "a100", 105.0, "tokens/s",
     "issue 6: ~105 tokens/s at ~1.4 TB/s achieved"),
    ("Groq LPU x 576, Llama-2-70B", "llama-2-70b", "groq-lpu", 300.0, "tokens/s",
     "Groq (2024): ~300 tokens/s, 4096-token context"),
    ("Cerebras WSE-3 x 4, Llama-3.1-70B 16-bit", "llama-3.1-70b", "cerebras-wse3", 450.0, "tokens/s",
     "Cerebras Inference launch (August 2024): ~450 tokens/s"),
)


def calibration_rows() -> list[dict]:
    """The calibration table's rows: predicted against published, with the relative error."""
    rows = []
    for what, model, preset, published, unit, source in CALIBRATION:
        hw = load_hardware(preset)
        if model is None:
            predicted, binding, context = hw.peak_ops_per_s, "2 x R x C x clock", None
        else:
            e = estimate(model, hw)
            predicted, binding, context = e.tokens_per_s, f"{e.binding} ({100 * e.efficiency:.0f} %)", e.context
        rows.append({"what": what, "model": model, "hardware": preset, "context": context,
                     "predicted": predicted, "published": published, "unit": unit,
                     "error": predicted / published - 1, "binding": binding, "source": source})
    return rows


def _value(v: float, unit: str) -> str:
    return quantity(v, "OPS") if unit == "ops/s" else f"{number(v)} {unit}"


def calibration_markdown() -> str:
    """The calibration table as markdown (docs/calibration.md holds exactly this; a test checks)."""
    lines = ["| what | hardware preset | context | predicted | published | error | binding bound (share) |",
             "|---|---|---|---|---|---|---|"]
    for r in calibration_rows():
        lines.append(f"| {r['what']} | {r['hardware']} | {r['context'] or '-'} | {_value(r['predicted'], r['unit'])} "
                     f"| {_value(r['published'], r['unit'])} | {100 * r['error']:+.1f} % | {r['binding']} |")
    return "\n".join(lines)


_TABLE_START, _TABLE_END = "<!-- calibration table -->\n", "\n<!-- end calibration table -->"


def update_calibration_doc(path) -> bool:
    """Rewrite the table of docs/calibration.md from the code; True if it changed.

    Run it after the cycle model changes: ``python -m sim.perf.model docs/calibration.md``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, end = text.index(_TABLE_START) + len(_TABLE_START), text.index(_TABLE_END)
    new = text[:start] + calibration_markdown() + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":  # pragma: no cover

    for doc in sys.argv[1:] or [str(Path(__file__).resolve().parents[2] / "docs" / "calibration.md")]:
        print(f"{doc}: {'updated' if update_calibration_doc(doc) else 'already up to date'}")
