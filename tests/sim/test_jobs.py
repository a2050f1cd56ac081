"""Jobs are typed: every registered flow's job has a TypedDict shape (every key documented), and one
rule (sim.engine.jobs.check_keys, run by the registry's check before any simulator starts) refuses a
job with a missing or an unknown key, naming it, at the top and one level down."""

import inspect
import json
import re
import sys
from typing import get_args, get_origin, is_typeddict

import pytest

from golden.errors import InputError, InputTypeError
from sim.engine import registry
from sim.engine.jobs import check_keys, keys
from sim.engine.runner import run
from sim.flows.decode import IMAGE_MEMORIES, decode_job, top_params
from sim.flows.decode_steps import DecodeImages, DecodeMemories
from sim.flows.vector import PRESETS, vector_job

from .tiny_models import tiny

FLOWS = list(registry.FLOWS)


def _shapes(shape, seen=None):
    """``shape``, its TypedDict bases and every TypedDict its keys hold (one or more levels down)."""
    seen = {} if seen is None else seen
    if shape in seen:
        return seen
    seen[shape] = None
    bases = re.match(r"class \w+\((.*)\):", inspect.getsource(shape)).group(1)
    for base in (getattr(sys.modules[shape.__module__], b.strip(), None) for b in bases.split(",")):
        if base is not None and is_typeddict(base):
            _shapes(base, seen)
    for hint in keys(shape)[0].values():
        inner = get_args(hint)[0] if get_origin(hint) is list and get_args(hint) else hint
        if is_typeddict(inner):
            _shapes(inner, seen)
    return seen


def _documented(shape) -> set[str]:
    """Keys written in ``shape``'s own class body right under a ``#:`` comment."""
    lines = inspect.getsource(shape).splitlines()
    out = set()
    for before, line in zip(lines, lines[1:], strict=False):
        m = re.match(r"^    (\w+): ", line)
        if m and before.strip().startswith("#:"):
            out.add(m.group(1))
    return out


def _minimal(shape) -> dict:
    """A job holding exactly the required keys of ``shape`` (values are left to the flows' own checks)."""
    table, required = keys(shape)
    return {k: None for k in table if k in required}


@pytest.mark.parametrize("name", FLOWS)
def test_every_flow_has_a_typed_job_with_every_key_documented(name):
    shape = registry.job_shape(name)
    assert is_typeddict(shape) and shape.__total__
    table, required = keys(shape)
    assert required and required <= set(table)
    for inner in _shapes(shape):
        documented = set().union(*(_documented(s) for s in _shapes(inner)))
        assert set(keys(inner)[0]) <= documented, (inner.__name__, set(keys(inner)[0]) - documented)


@pytest.mark.parametrize("name", FLOWS)
def test_a_missing_key_is_refused(name):
    _, check = registry.flow(name)
    job = _minimal(registry.job_shape(name))
    for key in job:
        partial = {k: v for k, v in job.items() if k != key}
        with pytest.raises(InputError, match=rf"^{name} job: missing key '{key}'$"):
            check(partial)


@pytest.mark.parametrize("name", FLOWS)
def test_an_unknown_key_is_refused(name):
    _, check = registry.flow(name)
    shape = registry.job_shape(name)
    known = ", ".join(keys(shape)[0])
    with pytest.raises(InputError, match=rf"^{name} job: unknown key 'sedd' \(known: {re.escape(known)}\)$"):
        check({**_minimal(shape), "sedd": 1})
    with pytest.raises(InputTypeError, match=rf"^{name} job must be a table, not list$"):
        check([])


def test_keys_one_level_down_are_checked():
    _, check = registry.flow("gemm_unit")
    case = {"m": 1, "k": 1, "n": 1, "a": [[1]], "w": [[1]]}
    with pytest.raises(InputError, match=r"^gemm_unit job cases\[1\]: missing key 'w'$"):
        check({"config": {}, "cases": [case, {k: v for k, v in case.items() if k != "w"}]})
    with pytest.raises(InputError, match=r"^gemm_unit job cases\[0\]: unknown key 'budgte' \(known: m, k, n, a, w, "
                                         r"budget\)$"):
        check({"config": {}, "cases": [dict(case, budgte=5)]})
    with pytest.raises(InputTypeError, match=r"^gemm_unit job cases must be a list, not dict$"):
        check({"config": {}, "cases": case})
    with pytest.raises(InputError, match=r"^vector_ops job tables: unknown key 'tanh' \(known: silu, gelu, rope\)$"):
        check_keys({"params": {}, "ops": [], "tables": {"tanh": {}}}, registry.job_shape("vector_ops"),
                   "vector_ops job")


def test_a_bad_job_is_refused_before_the_simulator_starts():
    job = {"rows": 2, "cols": 2, "a": [[1, 2]], "w": [[1, 2], [3, 4]], "sed": 3}
    with pytest.raises(InputError, match=r"^array_stream job: unknown key 'sed' \(known: rows, cols, rows_per_beat, a, "
                                         r"w, seed, "):
        run("icarus", "array", {"rows": 2, "cols": 2}, "array_stream", job)


def test_the_decode_images_are_the_memories_loaded():
    """The image keys of a decode job are IMAGE_MEMORIES' (its loading order), the memories those plus
    the ones read back."""
    assert list(keys(DecodeImages)[0]) == list(IMAGE_MEMORIES)
    assert list(keys(DecodeMemories)[0]) == [*IMAGE_MEMORIES, "trace", "scratch", "logits"]


def test_the_builders_make_jobs_that_fit_their_shapes():
    compiled = tiny("gpt2")
    params = top_params(compiled)
    _, check = registry.flow("decode_top")
    for job in (decode_job(compiled, params, steps=[(1, 0)], trace=True, readback={"scratch": 2, "logits": 3}),
                decode_job(compiled, params, prompt=[1, 2], new_tokens=3)):
        check(json.loads(json.dumps(job)))   # plain JSON-able dicts: what reaches the simulator process
    job = decode_job(compiled, params, prompt=[1, 2], new_tokens=3)
    del job["new_tokens"]
    with pytest.raises(InputError, match=r"^decode_top job needs 'new_tokens' with 'prompt', and only with it$"):
        check(job)
    _, check = registry.flow("vector_ops")
    check(json.loads(json.dumps(vector_job(PRESETS["small"], [{"op": "argmax", "x": [1, 2]}]))))


def test_what_the_keys_alone_do_not_say_is_the_flows_own_check():
    _, check = registry.flow("link_pty")
    with pytest.raises(InputError, match=r"^link_pty job needs 'images' with 'preload'$"):
        check({"pty_file": "pty", "stop_file": "stop", "preload": True})
    _, check = registry.flow("decode_top")
    job = {k: {} for k in ("params", "memories", "n_kv_heads", "group")}
    job["images"] = {name: [] for name in IMAGE_MEMORIES}
    job["memories"] = {name: 0 for name in keys(DecodeMemories)[0]}
    passes = {"passes": [[[1, 0, 0]]], "row_stride": 8, "logits_stride": 8}
    for extra in ({}, {"steps": [], "prompt": [1], "new_tokens": 1}, {"steps": [], **passes}):
        with pytest.raises(InputError, match=r"^decode_top job needs exactly one of 'steps', 'prompt' and 'passes'$"):
            check({**job, **extra})
    with pytest.raises(InputError, match=r"^decode_top job needs 'logits_stride' with 'passes', and only with it$"):
        check({**job, "passes": [[[1, 0, 0]]], "row_stride": 8})
    check({**job, "steps": [[1, 0]]})
    check({**job, **passes})
