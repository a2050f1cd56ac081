"""The greedy decode loop's rule and the one prompt check (golden/greedy.py), tested directly."""

import subprocess
import sys

import numpy as np
import pytest

from golden.greedy import GreedyDecode, check_prompt, decode_steps


def _run(prompt, new_tokens, outputs):
    """Drive the loop with step outputs taken from ``outputs`` in turn; (inputs, generated flags, loop)."""
    loop = GreedyDecode(prompt, new_tokens)
    inputs, flags = [], []
    for position in range(loop.steps):
        inputs.append(loop.token(position))
        flags.append(loop.record(position, outputs[position]))
    return inputs, flags, loop


@pytest.mark.parametrize(("prompt_length", "new_tokens", "steps"), [(1, 0, 1), (1, 1, 1), (1, 5, 5), (3, 0, 3),
                                                                     (3, 1, 3), (3, 4, 6)])
def test_steps(prompt_length, new_tokens, steps):
    assert decode_steps(prompt_length, new_tokens) == steps
    assert GreedyDecode([0] * prompt_length, new_tokens).steps == steps


def test_prompt_then_each_output_enters_the_next_position():
    inputs, flags, loop = _run([7, 8, 9], 3, [100, 101, 102, 103, 104])
    assert loop.steps == 5
    assert inputs == [7, 8, 9, 102, 103]
    assert flags == [False, False, True, True, True]
    assert loop.generated == [102, 103, 104]


def test_no_new_tokens_runs_the_prompt_and_generates_nothing():
    inputs, flags, loop = _run([4, 5], 0, [10, 11])
    assert inputs == [4, 5] and flags == [False, False] and loop.generated == []


def test_steps_are_recorded_in_order():
    loop = GreedyDecode([1, 2], 2)
    with pytest.raises(IndexError, match=r"^greedy decode: position 1 out of order \(expected 0 of 3 steps\)$"):
        loop.record(1, 5)
    for position in range(loop.steps):
        loop.record(position, 5)
    with pytest.raises(IndexError, match=r"^greedy decode: position 3 out of order \(expected 3 of 3 steps\)$"):
        loop.record(3, 5)


@pytest.mark.parametrize(("prompt", "new_tokens", "error", "match"), [
    ([], 1, ValueError, r"^prompt must hold at least one token$"),
    ([1, 16], 1, ValueError, r"^prompt token must be in 0\.\.15, not 16$"),
    ([-1], 1, ValueError, r"^prompt token must be in 0\.\.15, not -1$"),
    ([1.5], 1, TypeError, r"^prompt token must be an integer, not 1\.5$"),
    ([True], 1, TypeError, r"^prompt token must be an integer, not True$"),
    ("ab", 1, TypeError, r"^prompt must be a sequence of token ids, not str$"),
    (3, 1, TypeError, r"^prompt must be a sequence of token ids, not int$"),
    ([1], -1, ValueError, r"^the number of new tokens must be a non-negative integer, not -1$"),
    ([1], 2.0, ValueError, r"^the number of new tokens must be a non-negative integer, not 2\.0$"),
    ([1] * 7, 3, ValueError, r"^prompt \(7 tokens\) plus 3 new tokens needs 9 positions, more than max_context=8$"),
    ([1] * 9, 0, ValueError, r"^prompt \(9 tokens\) plus 0 new tokens needs 9 positions, more than max_context=8$"),
])
def test_check_prompt_refuses(prompt, new_tokens, error, match):
    with pytest.raises(error, match=match):
        check_prompt(prompt, new_tokens, 8, 16)


def test_check_prompt_accepts_the_whole_context():
    assert check_prompt(np.array([3, 4, 5]), 6, 8, 16) == [3, 4, 5]   # 3 + 6 - 1 = 8 positions
    assert check_prompt([1] * 8, 1, 8, 16) == [1] * 8
    assert all(type(t) is int for t in check_prompt(np.array([3, 4]), 1, 8, 16))


def test_module_is_light():
    """The simulator process imports the rule: no NumPy or Amaranth comes with it."""
    code = ("import sys, golden.greedy, sim.flows.decode_steps; "
            "print(sorted(m for m in ('numpy', 'amaranth') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
