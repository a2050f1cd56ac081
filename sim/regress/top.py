"""The decode top level's regression: random tiny models through the compiler, random token sequences.

A pool of :data:`POOL` random decoder models (GPT-2 and Llama families; 1 to 4 query heads of
head_dim 8, multi-head, grouped-query and multi-query; 1 or 2 layers; random feed-forward widths and
vocabularies; tied or untied embeddings), each quantized and compiled for one small design
(:data:`DESIGN`, the top-level RTL tests' build), is built from fixed seeds. A transaction is one
sequence on one model of the pool: random tokens (biased to 0 and the last token) at positions 0,
1, ..., L - 1, L biased to 1, a few, and the whole context. Each step is scored against the
instruction-level model (:class:`sim.machine.isa_sim.IsaMachine`, run on the same steps): the
argmax token and the logits word for word, and the step's cycle counter against the cycle model.
A chunk runs as one ``decode_top`` job per model (the images loaded once, the steps one after
another; each sequence starts at position 0, so it reads only KV rows it wrote).
"""

from __future__ import annotations

import functools
import random
from dataclasses import replace

from golden.model import ModelConfig, init_weights
from golden.numerics import ceil_div
from golden.quantize import quantize_model, random_calibration
from hdl.config import PRESETS, Config
from hdl.isa import Opcode

from ..flows.decode import decode_job, predicted_cycles, top_params
from ..machine.compiler import compile_model
from ..machine.isa_sim import IsaMachine
from .block import Block, by_model, split_steps, varied

#: The design: the 4 x 4 preset with small memories, head_dim 8, 4 heads, norms up to 32 (also the
#: top-level RTL tests' design, tests/sim/tiny_models.py: one Verilator build for both).
DESIGN = replace(PRESETS["4x4"], weight_words=8192, max_context=48, param_words=8192, scratch_bytes=2048,
                 kv_bytes=16384, logits_words=256, program_words=128)
SHARED = {"max_heads": 4, "max_norm_length": 32}
HEAD_DIM = 8
#: Models in the pool.
POOL = 12


def _architecture(rng: random.Random) -> ModelConfig:
    family = rng.choice(["gpt2", "llama"])
    n_heads = rng.randint(1, SHARED["max_heads"])
    n_kv = n_heads if family == "gpt2" else rng.choice([d for d in range(1, n_heads + 1) if n_heads % d == 0])
    return ModelConfig(family=family, vocab_size=rng.randint(5, 64), d_model=n_heads * HEAD_DIM,
                       n_layers=rng.randint(1, 2), n_heads=n_heads, n_kv_heads=n_kv, head_dim=HEAD_DIM,
                       d_ff=4 * rng.randint(2, 12), max_context=DESIGN.max_context,
                       tie_embeddings=family == "gpt2" and rng.random() < 0.5)


@functools.cache
def pool(design: Config = DESIGN) -> tuple:
    """The compiled models of the pool for ``design``, model ``i`` from seed ``i`` (the first two: one of
    each family)."""
    if design != DESIGN:
        return tuple(compile_model(c.model, design) for c in pool())
    out = []
    for i in range(POOL):
        rng = random.Random(i)
        cfg = _architecture(rng)
        if i < 2:
            cfg = replace(cfg, family=("gpt2", "llama")[i], n_kv_heads=cfg.n_heads,
                          tie_embeddings=i == 0)
        model = quantize_model(cfg, init_weights(cfg, seed=i, std=0.3), random_calibration(cfg, windows=2, seed=i))
        out.append(compile_model(model, DESIGN))
    return tuple(out)


def _params(simulator: str) -> dict:
    return top_params(pool()[0], **SHARED)


def _pool(params) -> tuple:
    """The pool compiled for the design ``params`` describe."""
    return pool(Config.from_dict(params["config"]))


def vary(params, settings) -> dict:
    """The params of the design ``params`` describe with ``settings`` applied (``--set``)."""
    return top_params(pool(varied(Config.from_dict(params["config"]), settings))[0], **SHARED)


def generate(rng, params) -> dict:
    index = rng.randrange(POOL)
    mc = _pool(params)[index].model.config
    length = rng.choices([1, rng.randint(2, 8), mc.max_context], [0.3, 0.68, 0.02])[0]
    tokens = [rng.choice([0, mc.vocab_size - 1, rng.randrange(mc.vocab_size)]) for _ in range(length)]
    return {"model": index, "steps": [[t, p] for p, t in enumerate(tokens)]}


def _readback(compiled) -> dict:
    return {"logits": max(1, ceil_div(compiled.logits_size, compiled.config.vector_lanes))}


def jobs(params, txns) -> list:
    return [(decode_job(compiled, params, steps=[s for i in idx for s in txns[i][1]["steps"]],
                        readback=_readback(compiled)), idx) for compiled, idx in by_model(_pool(params), txns)]


def results(result, txns) -> list:
    return split_steps(result["steps"], txns)


def observe(params, txn, raw):
    n = _pool(params)[txn["model"]].logits_size
    return [[s["token_out"], s["logits"][:n], s["cycles"]] for s in raw]


def expect(params, txn):
    compiled = _pool(params)[txn["model"]]
    machine = IsaMachine(compiled)
    out = []
    for token, position in txn["steps"]:
        chosen = machine.run(token, position)
        out.append([chosen, machine.logits[:compiled.logits_size].tolist(), predicted_cycles(compiled, position)])
    return out


def points(params) -> dict:
    return {
        "model": [str(i) for i in range(POOL)],
        "family": ["gpt2", "llama"],
        "attention": ["mha", "gqa", "mqa"],
        "layers": ["1", "2"],
        "length": ["1", "2-8", "max"],
        "last_position": ["0", "1-7", "max"],
        "token": ["0", "last", "other"],
        "opcode": [o.name for o in Opcode],
        "chosen": ["0", "last", "other"],
    }


def sample(cov, params, txn, obs) -> None:
    compiled = _pool(params)[txn["model"]]
    mc = compiled.model.config
    cov.hit("model", str(txn["model"]))
    cov.hit("family", mc.family)
    cov.hit("attention", "mha" if mc.n_kv_heads == mc.n_heads else "mqa" if mc.n_kv_heads == 1 else "gqa")
    cov.hit("layers", str(mc.n_layers))
    n = len(txn["steps"])
    cov.hit("length", "1" if n == 1 else "max" if n == mc.max_context else "2-8")
    cov.hit("last_position", "0" if n == 1 else "max" if n == mc.max_context else "1-7")
    for token, _ in txn["steps"]:
        cov.hit("token", "0" if token == 0 else "last" if token == mc.vocab_size - 1 else "other")
    for op in {i.opcode.name for i in compiled.instructions}:
        cov.hit("opcode", op)
    for step in obs:
        chosen = step[0]
        cov.hit("chosen", "0" if chosen == 0 else "last" if chosen == mc.vocab_size - 1 else "other")


BLOCK = Block(name="top", design="decode_top", flow="decode_top", params=_params, generate=generate, jobs=jobs,
              results=results, observe=observe, expect=expect, sample=sample, points=points, closure=1.0,
              chunk=2500, vary=vary)
