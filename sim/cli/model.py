"""``lockstep inspect`` and ``lockstep golden``: look at a checkpoint, run the golden models on a prompt.

Both are standalone click commands; sim/cli/commands.py registers them on the ``lockstep`` group. Every
error a user can cause (a missing or corrupted checkpoint, a prompt the tokenizer cannot encode, a
bad number, a text prompt for a checkpoint without a tokenizer) ends as one line
``lockstep: error: ...`` on stderr and exit status 1.
"""

from __future__ import annotations

import json
import math

import click

from ..numbers import count, number
from .errors import UserError, friendly

# The commands import the layers below them (engine, runtime, perf, fpga, golden, hdl) when they run, not
# here: importing them all at start-up made every `lockstep` invocation about 3 s slower (`lockstep --help`
# took 0.6 s with them deferred and 3.6 s with them at module level, measured on this machine).

__all__ = ["DIVERGENCE_NOTE", "golden_cmd", "inspect_cmd"]

DEFAULT_PROMPT = "The old miller "
MODES = ("float", "int", "both")


class Number(click.ParamType):
    """An int or float option checked here, so a bad value is a one-line ``lockstep: error``."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None):
        self.kind, self.low, self.high = kind, low, high
        self.name = "integer" if kind is int else "number"

    def convert(self, value, param, ctx):
        opt = param.opts[-1] if param is not None and param.opts else "value"
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = self.kind(str(value).strip())
            except ValueError:
                raise UserError(f"{opt} must be {'an integer' if self.kind is int else 'a number'}, "
                                f"not {value!r}") from None
        if self.kind is float and not math.isfinite(number):
            raise UserError(f"{opt} must be a finite number, not {value!r}")
        if self.low is not None and number < self.low:
            raise UserError(f"{opt} must be at least {self.low:g}, not {value}")
        if self.high is not None and number > self.high:
            raise UserError(f"{opt} must be at most {self.high:g}, not {value}")
        return number


def load_model(path: str | None):
    from golden.checkpoint import demo_model_path, load_checkpoint

    return load_checkpoint(demo_model_path() if path is None else path)


def _describe(ckpt) -> dict:
    from golden.attention import MAX_CONTEXT_LIMIT
    from golden.quantize import weight_bytes

    from ..perf.model import gemm_weight_bytes

    c = ckpt.config
    sizes = weight_bytes(c)
    tok = ckpt.tokenizer
    return {
        "path": str(ckpt.path), "family": c.family, "vocab_size": c.vocab_size, "d_model": c.d_model,
        "n_layers": c.n_layers, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim,
        "d_ff": c.d_ff, "max_context": c.max_context, "int_max_context": min(c.max_context, MAX_CONTEXT_LIMIT),
        "tie_embeddings": c.tie_embeddings, "n_params": c.n_params(), **sizes,
        "gemm_weight_bytes_per_token": gemm_weight_bytes(c),     # estimate's weight_bytes_per_token
        "kv_bytes_full_context": sizes["kv_bytes_per_token"] * min(c.max_context, MAX_CONTEXT_LIMIT),
        "tokenizer": None if tok is None else f"character, {tok.vocab_size} characters",
        "rope": None if c.family != "llama" else {"theta": c.rope_theta, "scaling": ckpt.rope_scaling},
    }


@click.command("inspect")
@click.argument("checkpoint_dir", metavar="CHECKPOINT_DIR")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@friendly
def inspect_cmd(checkpoint_dir, as_json):
    """Describe a checkpoint: architecture, sizes, parameters and what decoding it moves.

    Byte counts are for the quantized model (int8 weights, int32 biases, per-channel
    requantization constants; see docs/quantization.md).
    """
    d = _describe(load_model(checkpoint_dir))
    if as_json:
        click.echo(json.dumps(d))
        return
    attn = (f"{d['n_heads']} query / {d['n_kv_heads']} kv heads" if d["n_kv_heads"] != d["n_heads"]
            else f"{d['n_heads']} heads")
    click.echo(f"checkpoint  : {d['path']}")
    click.echo(f"family      : {d['family']}{' (tied embeddings)' if d['tie_embeddings'] else ''}")
    click.echo(f"sizes       : d_model {count(d['d_model'])}, {d['n_layers']} layers, {attn} of {d['head_dim']}, "
               f"d_ff {count(d['d_ff'])}, vocab {count(d['vocab_size'])}, context {count(d['max_context'])}")
    if d["rope"] is not None:
        scaling = d["rope"]["scaling"]
        note = "" if scaling is None else (f", {scaling} scaling, which changes nothing here: positions stop "
                                           f"at max_position_embeddings ({d['max_context']})")
        click.echo(f"rope        : theta {number(d['rope']['theta'])}{note}")
    click.echo(f"parameters  : {d['n_params']:,}")
    click.echo(f"int8 weights: {d['int8_weight_bytes']:,} bytes (+ {d['int32_bytes']:,} bytes int32 biases, "
               f"{d['requant_bytes']:,} bytes requantization constants)")
    click.echo(f"per token   : {d['streamed_bytes_per_token']:,} bytes read per decode step, "
               f"{d['gemm_weight_bytes_per_token']:,} of them GEMM weights (the weight port's share, as "
               f"lockstep estimate counts it)")
    click.echo(f"KV cache    : {d['kv_bytes_per_token']:,} bytes per token "
               f"({d['kv_bytes_full_context']:,} at {count(d['int_max_context'])} tokens)")
    click.echo(f"tokenizer   : {d['tokenizer'] or 'none (prompts as token ids)'}")


def prompt_ids_of(ckpt, prompt: str | None, prompt_ids: str | None) -> list[int]:
    if prompt is not None and prompt_ids is not None:
        raise UserError("give either --prompt or --prompt-ids, not both")
    if prompt_ids is not None:
        try:
            ids = [int(x) for x in prompt_ids.replace(",", " ").split()]
        except ValueError:
            raise UserError(f"--prompt-ids must be integers separated by commas, not {prompt_ids!r}") from None
        bad = [i for i in ids if not 0 <= i < ckpt.config.vocab_size]
        if bad:
            raise UserError(f"--prompt-ids must be in 0..{ckpt.config.vocab_size - 1}, not {bad[0]}")
    else:
        if ckpt.tokenizer is None:
            raise UserError(f"{ckpt.path}: the checkpoint has no Lockstep tokenizer, so it cannot encode a "
                            f"text prompt: give token ids with --prompt-ids")
        text = DEFAULT_PROMPT if prompt is None else prompt
        try:
            ids = ckpt.tokenizer.encode(text)
        except ValueError as exc:
            raise UserError(f"prompt: {exc}") from None
    if not ids:
        raise UserError("the prompt must hold at least one token")
    return ids


def text_of(ckpt, ids) -> str | None:
    """Decoded text; an id the tokenizer has no character for (vocab_size may exceed the alphabet,
    as in the demo model) shows as U+FFFD."""
    tok = ckpt.tokenizer
    if tok is None:
        return None
    return "".join(tok.decode([i]) if i < tok.vocab_size else "\ufffd" for i in ids)


#: Why two free-running greedy texts part for good, and which figure measures the models' agreement.
DIVERGENCE_NOTE = ("free-running greedy texts diverge for good after one flipped near-tie (each model then continues "
                   "its own text); the measure of agreement is the teacher-forced top-1 agreement in "
                   "docs/quantization.md (98.57 % for the demo model)")


@click.command("golden")
@click.option("--model", "model_dir", default=None, metavar="DIR",
              help="Checkpoint directory (default: the shipped demo model).")
@click.option("--prompt", default=None, help=f"Prompt text (default: {DEFAULT_PROMPT!r}).")
@click.option("--prompt-ids", default=None, help="Prompt as token ids, e.g. '1,2,3' (no tokenizer needed).")
@click.option("--tokens", "n_tokens", type=Number(int, 0), default=64, show_default=True,
              help="Tokens to generate.")
@click.option("--mode", type=click.Choice(MODES), default="both", show_default=True,
              help="Run the float model, the integer model (what the chip computes), or both.")
@click.option("--temperature", type=Number(float, 0), default=0.0, show_default=True,
              help="0 is greedy (argmax); above 0 samples on the host.")
@click.option("--top-k", type=Number(int, 1), default=None, help="Sample only from the k most likely tokens.")
@click.option("--seed", type=Number(int, 0), default=0, show_default=True, help="Seed of the sampler.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@friendly
def golden_cmd(model_dir, prompt, prompt_ids, n_tokens, mode, temperature, top_k, seed, as_json):
    """Generate text with the float golden model, the integer golden model, or both.

    The integer model is the float model quantized (docs/quantization.md): greedy decoding takes
    the argmax of its int32 logits, exactly the token the chip computes. With --mode both the two
    continuations are compared token by token.
    """
    from golden.int_model import generate_int
    from golden.model import Transformer, generate
    from golden.quantize import quantize_checkpoint

    ckpt = load_model(model_dir)
    c = ckpt.config
    ids = prompt_ids_of(ckpt, prompt, prompt_ids)
    if top_k is not None and top_k > c.vocab_size:
        raise UserError(f"--top-k must be at most the vocabulary size {c.vocab_size}, not {top_k}")
    runs = {}
    out = {"model": str(ckpt.path), "family": c.family, "mode": mode, "prompt": text_of(ckpt, ids),
           "prompt_ids": ids, "temperature": temperature, "top_k": top_k, "seed": seed}
    if mode in ("float", "both"):
        runs["float"] = generate(Transformer(c, ckpt.weights), ids, n_tokens, temperature=temperature,
                                 top_k=top_k, seed=seed)
    if mode in ("int", "both"):
        im = quantize_checkpoint(ckpt)
        out["quantization"] = im.info
        runs["int"] = generate_int(im, ids, n_tokens, temperature=temperature, top_k=top_k, seed=seed)
    for name, toks in runs.items():
        out[name] = {"ids": toks, "text": text_of(ckpt, toks)}
    if mode == "both":
        a, b = runs["float"], runs["int"]
        prefix = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))
        out["agreement"] = {"tokens": len(a), "identical_prefix": prefix,
                            "same_positions": sum(x == y for x, y in zip(a, b, strict=True)),
                            "note": DIVERGENCE_NOTE}
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"model    : {out['model']} ({c.family})")
    if "quantization" in out:
        click.echo(f"quantized: calibration on {out['quantization']['calibration']}")
    click.echo(f"prompt   : {out['prompt']!r}" if out["prompt"] is not None else f"prompt   : {ids}")
    for name in runs:
        shown = out[name]["text"] if out[name]["text"] is not None else out[name]["ids"]
        click.echo(f"{name:9s}: {shown!r}" if isinstance(shown, str) else f"{name:9s}: {shown}")
    if mode == "both":
        ag = out["agreement"]
        click.echo(f"agreement: identical for the first {ag['identical_prefix']} of {ag['tokens']} tokens "
                   f"({ag['same_positions']} positions equal)")
        click.echo(f"note     : {DIVERGENCE_NOTE}")
