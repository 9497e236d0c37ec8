"""What every exercise check shares: call the student's function safely, compare its answer with the expected
one, and when they differ say *what* differs and, where the answer is a known mistake, *which* mistake.

Writing a check
---------------
A check is a plain function `check_xxx(fn) -> CheckResult`. Its body lists `Case`s (hand-made ones first, each
moving one thing and carrying its own hint, then random ones against the package's own functions) and hands them
to `Checker.run_cases`, which stops at the first failure. A case's `mistakes` maps a mistake's id to (the answer
that mistake gives on this case, the hint that names it): when the student's answer equals one of them, the hint
names that mistake and `CheckResult.mistake` holds its id (the mutation suites in tests/ read it). Otherwise the
hint says which component, row or element differs, with as many digits as it takes for the two values to look
different (True / False for booleans).

    def check_double(fn) -> CheckResult:
        '''Check `fn(x) -> 2 * x`, elementwise.'''

        def body(c: Checker):
            cases = []
            for name, x, hint in [("one value", torch.tensor([1.5]), "2 · 1.5 = 3"),
                                  ("a (2, 3) batch", torch.rand(2, 3), "double every element, keep the shape")]:
                mistakes = {"squared": (x * x, "that is x², not 2 · x"),
                            "summed": ((2 * x).sum(), "return one value per element: no sum")}
                cases.append(Case(name, (x,), 2 * x, hint, mistakes))
            c.run_cases(fn, cases)

        return Checker.run("double", body)

`run_cases(fn, cases, expect="number")` accepts a float or a one-value tensor; `read=` turns a richer output (a
tuple, a module) into the answer to compare, failing with a check's own hints first. A property that is not an
answer to compare is checked with `Checker.require`, a gradient with `Checker.gradient`.

Which mistake is named
----------------------
1. A mistake is ruled out once the student passed a case where that mistake's answer differs from the right one:
   the student cannot be making it, so no later case names it, even where its answer collides with another
   mistake's. `compare` keeps that record for every check, with or without `run_cases`.
2. When the answer on the failing case equals the answers of several mistakes still possible, `run_cases` calls the
   student's function on the later cases, quietly, and keeps the mistakes whose answers there equal the student's
   too: the hint names the mistake that explains every answer, not one that only looks the same on this case.

`Checker.run` runs the whole check with one torch thread (the cases are tiny tensors: on a busy machine threaded
kernels wait for a free core and take 100x longer) and restores the thread count after.
"""

from __future__ import annotations

import contextlib
import io
import math
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Case", "CheckResult", "Checker", "Mistakes", "fmt", "pair"]

Mistakes = dict  # {id: (answer this mistake gives, hint that names it)}; built by each check
TOL = 1e-4


@dataclass
class CheckResult:
    """What a check found: `passed`, one line per case (✔ or ✘ with a hint), and the id of the mistake the
    first failure was diagnosed as (`mistake`, None when the failure matched no known mistake)."""

    name: str
    passed: bool = True
    lines: list[str] = field(default_factory=list)
    mistake: str | None = None

    def ok(self, text: str) -> None:
        self.lines.append(f"✔ {text}")

    def fail(self, text: str, mistake: str | None = None) -> None:
        if self.passed:
            self.mistake = mistake
        self.passed = False
        self.lines.append(f"✘ {text}")

    @property
    def hint(self) -> str:
        """The text of the first failure ('' when everything passed)."""
        return next((line[2:] for line in self.lines if line.startswith("✘")), "")

    def __str__(self) -> str:
        verdict = "all checks passed, well done!" if self.passed else "not yet: see the ✘ below"
        return f"{self.name}: {verdict}\n" + "\n".join("  " + line for line in self.lines)

    def __repr__(self) -> str:
        return str(self)

    def __bool__(self) -> bool:
        return self.passed


@dataclass
class Case:
    """One case of a check: `fn(*args, **kwargs)` must answer `want`."""

    name: str
    args: tuple
    want: Any
    hint: str
    mistakes: Mistakes = field(default_factory=dict)  # {id: (that mistake's answer on this case, hint)}
    compare: dict = field(default_factory=dict)  # more keywords for Checker.compare (columns, tol, exact_dtype, ...)
    error_hints: dict | None = None  # {text in an exception's message: (mistake id, hint)}, for Checker.call
    kwargs: dict = field(default_factory=dict)  # keywords for the student's function

    @property
    def tol(self) -> float:
        return self.compare.get("tol", TOL)


_COMMON_ERRORS = {  # errors any check may meet, after each check's own `error_hints`
    "Boolean value of Tensor with more than one value is ambiguous": (
        "tensor_in_if", "`if` (or `and` / `or`) got a tensor of several values: compare one value at a time (.item()), "
                        "or keep whole tensors and combine masks with & and |"),
}


class _Stop(Exception):
    """Raised inside a check after the first failure; `Checker.run` turns it into the result."""


# ---- printing numbers ------------------------------------------------------------------------------------
def fmt(x, digits: int = 4) -> str:
    """A number as a student would read it: up to `digits` significant digits, no exponent for ordinary sizes."""
    if isinstance(x, bool):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.{digits}g}"


def pair(got, want) -> tuple[str, str]:
    """Two different values printed so that they look different: up to 10 significant digits, then Python's exact
    repr (which tells any two floats apart, 0.0 from -0.0 included); booleans as True / False."""
    if isinstance(got, bool) or isinstance(want, bool):
        return fmt(got), fmt(want)
    for digits in range(4, 11):
        a, b = fmt(got, digits), fmt(want, digits)
        if a != b:
            return a, b
    return repr(float(got)), repr(float(want))


def _cause(x: float) -> str:
    if math.isnan(x):
        return "nan comes from 0 / 0, 0 · inf, inf - inf or the mean of nothing"
    return "an infinity comes from a division by zero, the log of 0 or an overflow (exp of a large number)"


def _at(idx: tuple) -> str:
    return f" at index {idx[0]}" if len(idx) == 1 else f" at index {list(idx)}" if idx else ""


def _listing(x: torch.Tensor) -> str:
    """' [0, 2]' for a short 1-D answer, '' otherwise."""
    return f" [{', '.join(fmt(v) for v in x.tolist())}]" if x.dim() == 1 and len(x) <= 8 else ""


# ---- tensors ------------------------------------------------------------------------------------------------
def _as_tensor(x) -> torch.Tensor | None:
    if torch.is_tensor(x):
        return x.detach()
    try:
        return torch.as_tensor(x)
    except Exception:
        return None


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> torch.Tensor:
    """Elementwise closeness: equal infinities and NaN against NaN are close (a mistake's answer may be NaN)."""
    return torch.isclose(a.double(), b.double(), rtol=tol, atol=tol, equal_nan=True)


def _matches(a, b, tol: float) -> bool:
    """Same shape and every value close."""
    a, b = _as_tensor(a), _as_tensor(b)
    return a is not None and b is not None and a.shape == b.shape and bool(_close(a, b, tol).all())


def _gives(answer, wrong, want, tol: float) -> bool:
    """Whether `answer` is what the mistake answering `wrong` gives, where that differs from the right answer."""
    answer = _as_tensor(answer)
    return answer is not None and answer.numel() > 0 and _matches(answer, wrong, tol) and not _matches(wrong, want, tol)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op torch thread for the block, then the thread count as it was."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _student_line(fn, tb) -> str:
    """' (line N of your function: `code`)' for the deepest frame of the student's code in a traceback."""
    code = getattr(fn, "__code__", None)
    frames = [f for f in traceback.extract_tb(tb) if code is not None and f.filename == code.co_filename]
    if not frames:
        return ""
    f = frames[-1]
    line = (f.line or "").strip()
    return f" (line {f.lineno - code.co_firstlineno + 1} of your function: `{line}`)" if line else ""


class Checker:
    """Runs one check (`Checker.run(name, body)`): stops at the first failure, remembers the mistakes ruled out."""

    def __init__(self, name: str):
        self.result = CheckResult(name)
        self.ruled_out: set[str] = set()

    @classmethod
    def run(cls, name: str, body: Callable[[Checker], None]) -> CheckResult:
        c = cls(name)
        with _one_thread():
            try:
                body(c)
            except _Stop:
                pass
        return c.result

    # ---- verdicts ------------------------------------------------------------------------------------------
    def fail(self, text: str, mistake: str | None = None) -> None:
        self.result.fail(text, mistake)
        raise _Stop

    def ok(self, text: str) -> None:
        self.result.ok(text)

    def require(self, case: str, condition: bool, text: str, mistake: str | None = None) -> None:
        """Pass `case` when `condition` holds, else fail with `text`."""
        if condition:
            self.ok(case)
        else:
            self.fail(f"{case}: {text}", mistake)

    # ---- calling the student's function --------------------------------------------------------------------
    def call(self, case: str, fn, *args, expect: str | None = "tensor", error_hints: dict | None = None, **kwargs):
        """fn(*args, **kwargs) on copies of the inputs; fails (and stops) if it raises or returns None.

        expect: "tensor" (fail unless it returns one), "number" (returns `self.number` of it) or None (anything).
        error_hints: {text in the exception's message: (mistake id, hint)} for errors a typical mistake raises
        (then `_COMMON_ERRORS`, for any check).
        """
        args = tuple(a.clone() if torch.is_tensor(a) and not a.requires_grad else a for a in args)
        try:
            out = fn(*args, **kwargs)
        except NotImplementedError:
            self.fail("your function is not written yet (it raises NotImplementedError): replace that line with your code",
                      "not_implemented")
        except Exception as e:
            self._raised(case, fn, e, error_hints)
        if out is None:
            self.fail(f"{case}: your function returned None: did you forget `return`?", "returned_none")
        if expect == "number":
            return self.number(case, out)
        if expect == "tensor" and not torch.is_tensor(out):
            kind = type(out).__name__
            if isinstance(out, (list, tuple)):
                self.fail(f"{case}: your function returned a {kind}; return one torch.Tensor (torch.stack or torch.tensor "
                          "turn a list into one)", "not_a_tensor")
            self.fail(f"{case}: your function returned {kind}; it should return a torch.Tensor", "not_a_tensor")
        return out

    def _raised(self, case: str, fn, e: Exception, error_hints: dict | None) -> None:
        where = _student_line(fn, e.__traceback__)
        for text, (mid, hint) in [*(error_hints or {}).items(), *_COMMON_ERRORS.items()]:
            if text in str(e):
                self.fail(f"{case}: your function raised {type(e).__name__}{where}: {hint}", mid)
        self.fail(f"{case}: your function raised {type(e).__name__}: {e}{where}", "raised")

    def number(self, case: str, got) -> torch.Tensor:
        """The student's number as float64: 0-d for a float, an int, a numpy scalar or a tensor of one value. A
        tensor of several values keeps its shape, for `compare` to name it (a mistake, or "N values where one
        number is expected"). Anything else fails."""
        if isinstance(got, (list, tuple)):
            t, what = None, f"a {type(got).__name__}"
        else:
            t, what = _as_tensor(got), f"a bool ({got})" if isinstance(got, bool) else type(got).__name__
        if t is None or t.dtype == torch.bool or t.is_complex():
            self.fail(f"{case}: your function returned {what}; return one number (a float or a 0-d tensor)", "not_a_number")
        t = t.double()
        return t.reshape(()) if t.numel() == 1 else t

    # ---- running cases ---------------------------------------------------------------------------------------
    def run_cases(self, fn, cases: Sequence[Case], *, expect: str | None = "tensor",
                  read: Callable[[Checker, Case, Any], Any] | None = None):
        """Each case in turn, stopping at the first failure; returns the last answer.

        expect: as in `call`. read(c, case, output) -> the answer to compare: for outputs that are not the answer
        itself (a tuple to make a table of, rows to sort), and for a check's own hints, which it gives with
        `c.fail` before the comparison. It also reads the later cases' outputs when mistakes are told apart.
        """
        answer = None
        for i, case in enumerate(cases):
            answer = self._answer(fn, case, expect, read)
            self._tell_apart(fn, answer, case, cases[i + 1:], expect, read)
            self.compare(case.name, answer, case.want, hint=case.hint, mistakes=case.mistakes, **case.compare)
        return answer

    def _answer(self, fn, case: Case, expect, read):
        out = self.call(case.name, fn, *case.args, expect=expect, error_hints=case.error_hints, **case.kwargs)
        return read(self, case, out) if read else out

    def _quiet_answer(self, fn, case: Case, expect, read) -> torch.Tensor | None:
        """The student's answer on `case`, with no verdict and no printout (None if there is none)."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return _as_tensor(Checker(self.result.name)._answer(fn, case, expect, read))
        except Exception:  # a failure (_Stop) or a crash: no answer to learn from
            return None

    def live(self, mistakes: Mistakes | None) -> Mistakes:
        """The mistakes not ruled out yet."""
        return {k: v for k, v in (mistakes or {}).items() if k not in self.ruled_out}

    def _tell_apart(self, fn, answer, case: Case, later: Sequence[Case], expect, read) -> None:
        """Several mistakes give the student's answer on this case: rule out those that do not give it on the
        later cases too (a later answer that fits none of them, two mistakes at once?, decides nothing)."""
        suspects = [k for k, (wrong, _) in self.live(case.mistakes).items() if _gives(answer, wrong, case.want, case.tol)]
        for nxt in later:
            if len(suspects) < 2:
                return
            theirs = self._quiet_answer(fn, nxt, expect, read)
            if theirs is None:
                continue
            keep = [k for k in suspects if k not in nxt.mistakes or _matches(theirs, nxt.mistakes[k][0], nxt.tol)]
            if keep:
                self.ruled_out.update(set(suspects) - set(keep))
                suspects = keep

    # ---- comparing -------------------------------------------------------------------------------------------
    def compare(self, case: str, got, want, *, hint: str, mistakes: Mistakes | None = None,
                columns: Sequence[str] | None = None, row_name: str = "row", col_name: str | None = None,
                tol: float = TOL, exact_dtype: str | None = None, pairwise: bool = False, items: str | None = None,
                what: str = "answer") -> None:
        """Pass if `got` equals `want` (shape and values); else fail with the most specific hint there is: a
        mistake still possible, a wrong count, a shape, a dtype, a value that is not finite, then where it differs.
        On a pass, the mistakes whose answers differ from `want` are ruled out for the rest of the check.

        columns: names of the last dimension's entries (e.g. ("dx", "dy", "dw", "dh")), so a wrong component is named.
        row_name / col_name: what the rows and columns of a 2-D answer are (e.g. "boxes1 box", "boxes2 box").
        exact_dtype: "bool" or "int" when the answer must be a mask or indices (values compared exactly).
        pairwise: the answer is an (N, M) matrix of every pair (a 1-D answer then means "only pairs (i, i)").
        items: what the answer lists, one per row (e.g. "candidates"): a wrong number of them is said as such.
        what: the answer's name in the hints ("your AP is nan, expected 0").
        """
        want = _as_tensor(want)
        t = _as_tensor(got)
        if t is None:
            self.fail(f"{case}: your answer is a {type(got).__name__}, not a tensor or a number", "not_a_tensor")
        if not _matches(t, want, tol):
            self._name_mistake(case, t, want, mistakes, tol)
            self._count(case, t, want, items, hint)
            if t.shape != want.shape:
                mid = "not_pairwise" if pairwise and t.dim() == 1 else "shape"
                self.fail(f"{case}: {_shape_hint(t.shape, want.shape, columns, pairwise)}", mid)
        t, good = self._elementwise(case, t, want, tol, exact_dtype, hint, what)
        if not bool(good.all()):
            self.fail(f"{case}: {_where(t, want, good, columns, row_name, col_name)} Hint: {hint}", None)
        self.ok(case)
        self.ruled_out.update(k for k, (wrong, _) in (mistakes or {}).items() if not _matches(wrong, want, tol))

    def _name_mistake(self, case: str, t, want, mistakes, tol: float) -> None:
        for mid, (wrong, text) in self.live(mistakes).items():  # a known mistake, whatever its shape
            if _gives(t, wrong, want, tol):
                self.fail(f"{case}: {text}", mid)

    def _count(self, case: str, t, want, items: str | None, hint: str) -> None:
        if items and t.dim() >= 1 and want.dim() >= 1 and len(t) != len(want) and t.shape[1:] == want.shape[1:]:
            self.fail(f"{case}: you returned {len(t)} {items}{_listing(t)}, expected {len(want)}{_listing(want)}. "
                      f"Hint: {hint}", "count")

    def _elementwise(self, case: str, t, want, tol, exact_dtype, hint, what):
        """(the answer in the dtype it is compared in, which of its values are right); fails on a wrong dtype or a
        value that is not finite where the expected one is."""
        if exact_dtype == "bool" and t.dtype != torch.bool:
            if not bool(((t == 0) | (t == 1)).all()):
                self.fail(f"{case}: return a boolean mask (True = keep), not {t.dtype} values {t.flatten()[:6].tolist()}",
                          "dtype")
            t = t.bool()
        if exact_dtype in ("bool", "int"):
            if t.is_floating_point() and not bool((t == t.round()).all()):
                self.fail(f"{case}: return whole numbers (indices), got {t.flatten()[:6].tolist()}", "dtype")
            return t, t.long() == want.long()
        bad = ~torch.isfinite(t.double()) & torch.isfinite(want.double())
        if bool(bad.any()):
            i = tuple(int(v) for v in torch.nonzero(bad)[0])
            yours, expected = fmt(float(t[i])), fmt(float(want[i]))
            said = f"is {yours}, expected {expected}" if not i else f"has {yours}{_at(i)}, where {expected} is expected"
            self.fail(f"{case}: your {what} {said}: {_cause(float(t[i]))}. Hint: {hint}", "not_finite")
        return t, _close(t, want, tol)

    # ---- gradients -------------------------------------------------------------------------------------------
    def gradient(self, case: str, fn, x: torch.Tensor, args: tuple, want_grad: torch.Tensor, *, hint: str,
                 mistakes: Mistakes | None = None, tol: float = TOL, error_hints: dict | None = None) -> None:
        """d(sum of fn(x, *args)) / dx, compared with `want_grad` (NaN or inf named as such)."""
        x = x.detach().clone().requires_grad_(True)
        out = self.call(case, fn, x, *args, error_hints=error_hints)
        if not out.requires_grad:
            self.fail(f"{case}: your loss carries no gradient back to the logits: the computation left autograd's graph "
                      "(.detach(), .item(), .numpy(), torch.no_grad or building a new tensor from numbers breaks it)", "no_grad")
        try:
            (g,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
        except RuntimeError as e:
            self.fail(f"{case}: backward failed: {e}", "raised")
        if g is None:
            self.fail(f"{case}: your loss does not depend on the logits it was given", "no_grad")
        bad = ~torch.isfinite(g)
        if bad.any():
            i = int(torch.nonzero(bad.flatten())[0])
            self.fail(f"{case}: the gradient is {fmt(float(g.flatten()[i]))} at logit {fmt(float(x.detach().flatten()[i]))}. {hint}",
                      "grad_not_finite")
        self.compare(case, g, want_grad, hint=hint, mistakes=mistakes, tol=tol)


# ---- explanations ----------------------------------------------------------------------------------------------
def _shape_hint(got: torch.Size, want: torch.Size, columns, pairwise: bool = False) -> str:
    g, w = tuple(got), tuple(want)
    n = math.prod(g)
    base = f"your answer has shape {g}, expected {w}"
    if pairwise and len(g) == 1 and len(w) == 2:
        return (f"{base}: one value per box, not one per pair. Compare every box of the first set with every box of "
                "the second: index them [:, None, :] and [None, :, :] so that they broadcast to (N, M, ...)")
    if len(g) == 2 and len(w) == 2 and g == w[::-1] and g != w:
        what = f"one row per item, with columns {', '.join(columns)}" if columns else "rows and columns swapped"
        return f"{base}: that is the transpose ({what}; stack along dim=1, or check which set indexes the rows)"
    if len(g) == 0 or (g == (1,) and w not in ((1,), ())):
        return f"{base}: a single number. Return one value per element: no sum, mean or .item() at the end"
    if not w:
        if n == 1:
            return f"{base}: one value, with extra dimensions of size 1 (return a 0-d tensor: .squeeze() or .reshape(()))"
        return f"{base}: {n} values where one number is expected (no broadcasting over a tensor: reduce to one value)"
    if len(g) == 1 and len(w) > 1 and n == math.prod(w):
        return (f"{base}: the right number of values, flattened. torch.cat puts its pieces end to end; to keep the shape, "
                "torch.stack(..., dim=1) the columns (one row per item), or reshape")
    if len(g) < len(w) and g == w[:len(g)]:
        return f"{base}: the last dimension is missing (did you sum, take the max or index over it?)"
    if len(g) < len(w) and g == w[len(w) - len(g):]:
        return f"{base}: the first dimension is missing (did you sum, take the max or index over it?)"
    if len(g) == len(w) and sorted(g) == sorted(w):
        return f"{base}: the same sizes in another order (check which dimension is which)"
    return base


def _are(names: list[str], sep: str) -> str:
    return f"{sep.join(names)} {'is' if len(names) == 1 else 'are'}"


def _where(t, want, good, columns, row_name, col_name) -> str:
    """Which components or elements differ, and the first difference, printed so that the two values differ."""
    idx = tuple(int(v) for v in torch.nonzero(~good)[0])
    g, w = pair(t[idx].item(), want[idx].item())
    bad = int((~good).sum())
    if columns and t.dim() >= 1 and t.shape[-1] == len(columns):
        col_ok = good.reshape(-1, len(columns)).all(dim=0).tolist()
        wrong = [c for c, ok in zip(columns, col_ok) if not ok]
        right = [c for c, ok in zip(columns, col_ok) if ok]
        rows = int((~good).reshape(-1, len(columns)).any(dim=1).sum())
        total = good.numel() // len(columns)
        where = (f"{_are(wrong, ' and ')} wrong" + (f" ({_are(right, ', ')} right)" if right else "")
                 + (f" in {rows} of {total} rows" if total > 1 else "") + ". ")
        row = f"row {idx[0]}, " if t.dim() == 2 else ""
        return where + f"First difference: {row}{columns[idx[-1]]} = {g}, expected {w}."
    if t.dim() == 0:
        return f"got {g}, expected {w}."
    if t.dim() == 1:
        return f"{bad} of {t.numel()} values differ. First difference: element {idx[0]} = {g}, expected {w}."
    if t.dim() == 2:
        rows, cols = (~good).any(dim=1), (~good).any(dim=0)
        cn = col_name or "column"
        return (f"{bad} of {good.numel()} values differ ({int(rows.sum())} of {t.shape[0]} {row_name}s, "
                f"{int(cols.sum())} of {t.shape[1]} {cn}s). First difference: [{idx[0]}, {idx[1]}] "
                f"({row_name} {idx[0]} with {cn} {idx[1]}) = {g}, expected {w}.")
    return f"{bad} of {good.numel()} values differ. First difference at {list(idx)}: {g}, expected {w}."
