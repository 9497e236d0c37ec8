"""The exercises' framework (retinanet_lab/exercises/_check.py) on its own: which mistake a failure names (the
narrowing rule), answers that are not finite, NaN in a mistake's answer, booleans, the wrong-count and flattened
hints, numbers, one thread per check, and the rule that a failure never shows two values that print the same."""

from __future__ import annotations

import contextlib
import io
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from retinanet_lab.exercises._check import Case, Checker, pair


def run(body, name: str = "demo"):
    return Checker.run(name, body)


def compare(got, want, **options):
    options.setdefault("hint", "the hint")
    return run(lambda c: c.compare("the case", got, want, **options))


T = torch.tensor


# ---- the narrowing rule -----------------------------------------------------------------------------------
def _student(answers: dict):
    """A student's function given by its answers: x -> answers[x]."""
    return lambda x: T([float(answers[float(x)])])


def _case(name: str, x: float, want: float, **mistakes: float) -> Case:
    return Case(name, (T([x]),), T([want]), "the hint", {k: (T([v]), f"mistake {k}") for k, v in mistakes.items()})


def test_a_mistake_contradicted_by_a_passed_case_is_never_named():
    # 'a' would have failed the first case, which the student passed: on the second, where 'a' and 'b' give the
    # student's 5, only 'b' can be the mistake ('b' was right on the first case, so it is still possible)
    cases = [_case("first", 3.0, 6.0, a=9.0, b=6.0), _case("second", 2.0, 4.0, a=5.0, b=5.0)]
    r = run(lambda c: c.run_cases(_student({3.0: 6.0, 2.0: 5.0}), cases))
    assert r.mistake == "b" and r.lines == ["✔ first", "✘ second: mistake b"], str(r)
    cases = [_case("first", 3.0, 6.0, a=9.0), _case("second", 2.0, 4.0, a=5.0)]
    r = run(lambda c: c.run_cases(_student({3.0: 6.0, 2.0: 5.0}), cases))
    assert r.mistake is None and "element 0 = 5, expected 4" in r.hint, str(r)


def test_the_rule_holds_for_hand_made_compares_too():
    def body(c):
        c.compare("passed", T([3.0]), T([3.0]), hint="h", mistakes={"a": (T([4.0]), "mistake a")})
        c.compare("failed", T([4.0]), T([5.0]), hint="h", mistakes={"a": (T([4.0]), "mistake a"),
                                                                    "b": (T([4.0]), "mistake b")})
    r = run(body)
    assert r.mistake == "b" and r.lines == ["✔ passed", "✘ failed: mistake b"], str(r)


def test_a_mistake_right_on_a_passed_case_stays_possible():
    def body(c):
        c.compare("passed", T([3.0]), T([3.0]), hint="h", mistakes={"a": (T([3.0]), "mistake a")})
        c.compare("failed", T([4.0]), T([5.0]), hint="h", mistakes={"a": (T([4.0]), "mistake a")})
    assert run(body).mistake == "a"


def test_ambiguous_mistakes_are_told_apart_by_the_later_cases():
    # on the first case 'a' and 'b' both give 5; on the second they give 7 and 8: the student's 8 says 'b'
    cases = [_case("first", 2.0, 4.0, a=5.0, b=5.0), _case("second", 3.0, 6.0, a=7.0, b=8.0)]
    r = run(lambda c: c.run_cases(_student({2.0: 5.0, 3.0: 8.0}), cases))
    assert r.mistake == "b" and r.lines == ["✘ first: mistake b"], str(r)
    r = run(lambda c: c.run_cases(_student({2.0: 5.0, 3.0: 7.0}), cases))
    assert r.mistake == "a", str(r)


def test_a_later_case_contradicts_only_the_mistakes_it_lists_and_only_with_an_answer():
    cases = [_case("first", 2.0, 4.0, a=5.0, b=5.0), _case("second", 3.0, 6.0, b=8.0), _case("third", 4.0, 8.0, a=1.0, b=2.0)]
    r = run(lambda c: c.run_cases(_student({2.0: 5.0, 3.0: 6.0, 4.0: 2.0}), cases))  # 6, not 8: not 'b'; 'a' not listed
    assert r.mistake == "a", str(r)
    r = run(lambda c: c.run_cases(_student({2.0: 5.0, 4.0: 2.0}), cases))  # raises on the second (KeyError): the third decides
    assert r.mistake == "b", str(r)


def test_a_later_answer_that_fits_no_suspect_decides_nothing():
    cases = [_case("first", 2.0, 4.0, a=5.0, b=5.0), _case("second", 3.0, 6.0, a=7.0, b=8.0)]
    r = run(lambda c: c.run_cases(_student({2.0: 5.0, 3.0: 100.0}), cases))  # two mistakes at once?
    assert r.mistake == "a", str(r)  # the catalogue's order


def test_the_look_ahead_is_quiet_and_reads_the_answers():
    calls, read_cases = [], []

    def noisy(x):
        calls.append(float(x))
        print("debugging", float(x))
        return _student({2.0: 5.0, 3.0: 8.0})(x)

    def read(c, case, out):
        read_cases.append(case.name)
        return out

    cases = [_case("first", 2.0, 4.0, a=5.0, b=5.0), _case("second", 3.0, 6.0, a=7.0, b=8.0)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        r = run(lambda c: c.run_cases(noisy, cases, read=read))
    assert r.mistake == "b"
    assert calls == [2.0, 3.0] and read_cases == ["first", "second"]
    assert out.getvalue() == "debugging 2.0\n", "the look-ahead call must not print"


# ---- answers that are not finite, NaN mistakes --------------------------------------------------------------
@pytest.mark.parametrize("value, shown", [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_a_0d_answer_that_is_not_finite_is_named(value, shown):
    r = compare(T(value), T(0.25, dtype=torch.float64))
    assert r.mistake == "not_finite" and f"your answer is {shown}, expected 0.25" in r.hint, str(r)
    assert "Hint: the hint" in r.hint
    r = compare(T(value), T(0.25), what="AP")
    assert f"your AP is {shown}, expected 0.25" in r.hint


def test_a_not_finite_element_is_located():
    r = compare(T([[1.0, 2.0], [3.0, math.nan]]), T([[1.0, 2.0], [3.0, 4.0]]))
    assert r.mistake == "not_finite" and "has nan at index [1, 1], where 4 is expected" in r.hint and "0 / 0" in r.hint
    r = compare(T([1.0, -math.inf]), T([1.0, 4.0]))
    assert "has -inf at index 1, where 4 is expected" in r.hint and "division by zero" in r.hint


def test_a_mistake_whose_answer_is_nan_can_be_named():
    nan = math.nan
    mistakes = {"zero_over_zero": (T([nan, 1.0]), "0 / 0 where nothing was detected")}
    assert compare(T([nan, 1.0]), T([0.0, 1.0]), mistakes=mistakes).mistake == "zero_over_zero"
    assert compare(T(nan), T(0.0), mistakes={"m": (T(nan), "0-d nan")}).mistake == "m"
    assert compare(T([nan, 2.0]), T([0.0, 1.0]), mistakes=mistakes).mistake == "not_finite"  # not that mistake


def test_nan_expected_and_nan_answered_is_right_and_equal_infinities_too():
    assert compare(T([math.nan, math.inf]), T([math.nan, math.inf])).passed


# ---- booleans, counts, shapes, types ---------------------------------------------------------------------------
def test_boolean_differences_print_true_and_false():
    r = compare(T([True, False, True]), T([True, True, True]), exact_dtype="bool")
    assert "element 1 = False, expected True" in r.hint, str(r)
    r = compare(T([1, 0, 1]), T([True, True, True]), exact_dtype="bool")  # 0/1 ints read as a mask
    assert "element 1 = False, expected True" in r.hint, str(r)
    r = compare(T([[True, False]]), T([[True, True]]))
    assert "= False, expected True" in r.hint, str(r)


def test_a_wrong_number_of_items_is_said_as_such_after_the_mistakes():
    r = compare(T([0, 1, 2]), T([0, 2]), items="kept boxes", exact_dtype="int")
    assert r.mistake == "count" and "you returned 3 kept boxes [0, 1, 2], expected 2 [0, 2]. Hint: the hint" in r.hint
    r = compare(T([0, 1, 2]), T([0, 2]), items="kept boxes", mistakes={"all": (T([0, 1, 2]), "you kept them all")})
    assert r.mistake == "all"
    r = compare(torch.zeros(30, 3), torch.zeros(20, 3), items="candidates")
    assert "you returned 30 candidates, expected 20. Hint" in r.hint  # no listing for long or 2-D answers
    assert compare(T([0, 1, 2]), T([0, 2])).mistake == "shape"  # without items: a shape


def test_concatenated_columns_are_called_flattened_not_a_missing_dimension():
    r = compare(torch.cat([T([0.1]), T([0.2]), T([0.3]), T([0.4])]), T([[0.1, 0.2, 0.3, 0.4]]), columns=("dx", "dy", "dw", "dh"))
    assert r.mistake == "shape" and "flattened" in r.hint and "torch.cat" in r.hint and "torch.stack" in r.hint, str(r)
    assert "missing" not in r.hint
    r = compare(T([1.0, 2.0]), T([[1.0, 0.0], [2.0, 0.0]]))  # a real missing dimension
    assert "the last dimension is missing" in r.hint


def test_several_values_where_one_number_is_expected():
    r = compare(T([1.0, 2.0]), T(3.0))
    assert r.mistake == "shape" and "2 values where one number is expected" in r.hint
    assert "extra dimensions of size 1" in compare(T([[3.5]]), T(3.0)).hint


@pytest.mark.parametrize("answer", [0.5, 1, np.float32(0.5), np.float64(1.0), T(0.5), T([0.5]), T([[1.0]], requires_grad=True)])
def test_number_accepts_floats_one_value_tensors_and_numpy_scalars(answer):
    t = run(lambda c: c.ok(str(c.number("n", answer).shape))).lines
    assert t == ["✔ torch.Size([])"]


@pytest.mark.parametrize("answer, shown", [(True, "a bool (True)"), ([0.5], "a list"), ((0.5,), "a tuple"), ("0.5", "str"),
                                           (T([True]), "Tensor")])
def test_number_refuses_what_is_not_a_number(answer, shown):
    r = run(lambda c: c.number("n", answer))
    assert r.mistake == "not_a_number" and f"returned {shown}; return one number" in r.hint


def test_several_values_keep_their_shape_for_the_mistakes():
    assert run(lambda c: c.ok(str(tuple(c.number("n", T([1.0, 2.0])).shape)))).lines == ["✔ (2,)"]


def test_call_expects_a_tensor_a_number_or_anything():
    assert run(lambda c: c.call("x", lambda: [1.0])).mistake == "not_a_tensor"
    assert run(lambda c: c.ok(repr(c.call("x", lambda: np.float64(2.0), expect="number")))).lines[0].startswith("✔ tensor(2.")
    layer = nn.Linear(2, 2)
    assert run(lambda c: c.require("module", c.call("x", lambda: layer, expect=None) is layer, "")).passed
    assert run(lambda c: c.call("x", lambda: None, expect=None)).mistake == "returned_none"


def test_gradient_takes_error_hints():
    def in_place(x, y):
        x[0] = 0.0  # autograd forbids it on a leaf that requires grad
        return x * y

    hints = {"leaf Variable that requires grad": ("in_place", "you changed x in place")}
    r = run(lambda c: c.gradient("grad", in_place, T([1.0, 2.0]), (T(3.0),), T([3.0, 3.0]), hint="h", error_hints=hints))
    assert r.mistake == "in_place" and "you changed x in place" in r.hint
    r = run(lambda c: c.gradient("grad", lambda x, y: x * y, T([1.0, 2.0]), (T(3.0),), T([3.0, 3.0]), hint="h"))
    assert r.passed


# ---- one thread --------------------------------------------------------------------------------------------------
def test_run_uses_one_thread_and_restores_the_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        run(lambda c: seen.append(torch.get_num_threads()))
        r = run(lambda c: (seen.append(torch.get_num_threads()), c.fail("stop", "m")))
        assert seen == [1, 1] and r.mistake == "m" and torch.get_num_threads() == 2
        with pytest.raises(ZeroDivisionError):
            run(lambda c: 1 / 0)  # a bug in a check is not hidden, and the thread count still comes back
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---- two values that print the same --------------------------------------------------------------------------
NEAR_MISSES = [
    (1.0, 1.0 + 3e-4), (0.1, 0.1003), (1e-7, 3e-4), (123456789.0, 123456789.0 * (1 + 3e-4)), (2.0**53, 2.0**53 + 2.0**40),
    (-0.5, -0.5003), (5.0, 5.002), (0.333333, 1 / 3 + 2e-4), (1e6, 1e6 + 400), (7, 8), (0.0, -3e-4),
    (float(np.float32(0.1)), 0.1 + 2.5e-4), (math.pi, math.pi * (1 + 2e-4)),
]


@pytest.mark.parametrize("a, b", NEAR_MISSES + [(0.0, -0.0), (1.0, 1.0 + 1e-15), (True, False), (True, 2), (1e-300, 2e-300)])
def test_pair_prints_two_different_values_differently(a, b):
    x, y = pair(a, b)
    assert x != y, (a, b, x)


def _shown_pairs(text: str) -> list[tuple[str, str]]:
    """Every 'X, expected Y' and 'X, where Y is expected' of a message."""
    found = re.findall(r"(?:=|got|is|\]:) (\S+), expected (\S+?)[.:,]?(?:\s|$)", text)
    return found + re.findall(r"has (\S+) at index .*?, where (\S+) is expected", text)


def _answers():
    """(answer, expected, compare options) that fail, in every layout the hints have, near the tolerance."""
    for a, b in NEAR_MISSES:
        yield T(a, dtype=torch.float64), T(b, dtype=torch.float64), {}
        yield T([0.0, a]), T([0.0, b], dtype=torch.float64), {}
        yield T([[a, 0.0, 0.0, 0.0]]), T([[b, 0.0, 0.0, 0.0]], dtype=torch.float64), {"columns": ("dx", "dy", "dw", "dh")}
        yield T([[0.0, a], [0.0, 0.0]]), T([[0.0, b], [0.0, 0.0]], dtype=torch.float64), {"row_name": "box"}
        yield T([[[a]]]), T([[[b]]], dtype=torch.float64), {}
        yield T(a, dtype=torch.float16), T(b, dtype=torch.float64), {"tol": 1e-6}
    yield T([True, False]), T([True, True]), {"exact_dtype": "bool"}
    yield T([3, 1]), T([3, 2]), {"exact_dtype": "int"}
    yield T([math.nan]), T([1.0]), {}


@pytest.mark.parametrize("got, want, options", list(_answers()))
def test_a_failure_never_shows_two_values_that_print_the_same(got, want, options):
    r = compare(got, want, **options)
    assert not r.passed
    shown = _shown_pairs(r.hint)
    assert shown, f"no value shown: {r.hint}"
    for x, y in shown:
        assert x != y, r.hint


def test_errors_any_check_meets_get_a_hint_after_the_checks_own():
    def tensor_in_if(x):
        return x if x > 0 else -x  # several values in an `if`

    r = run(lambda c: c.call("x", tensor_in_if, T([1.0, -2.0])))
    assert r.mistake == "tensor_in_if" and "combine masks with & and |" in r.hint and "line 2 of your function" in r.hint
    own = {"Boolean value of Tensor": ("own", "the check's own hint")}
    assert run(lambda c: c.call("x", tensor_in_if, T([1.0, -2.0]), error_hints=own)).mistake == "own"
