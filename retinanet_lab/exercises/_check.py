"""What every exercise check shares: call the student's function safely, compare its answer with the expected
one, and when they differ say *what* differs and, where the answer is a known mistake, *which* mistake.

A check is a plain function `check_xxx(fn) -> CheckResult`. It builds cases (hand-made first, each with its
own hint, then random ones), and for each case calls `Checker.compare(case, got, want, hint=..., mistakes=...)`.
`mistakes` maps a mistake's id to (the answer that mistake gives on this case, the hint that names it): when the
student's answer equals one of them, the student is told that mistake, and `CheckResult.mistake` holds its id
(the mutation suite in tests/ reads it). Otherwise the hint says which component, row or element differs and
prints the two values with as many digits as it takes for them to look different.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["CheckResult", "Checker", "Mistakes", "fmt", "pair"]

Mistakes = dict  # {id: (answer this mistake gives, hint that names it)}; built by each check


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


class _Stop(Exception):
    """Raised inside a check after the first failure; `Checker.run` turns it into the result."""


def fmt(x: float, digits: int = 4) -> str:
    """A number as a student would read it: up to `digits` significant digits, no exponent for ordinary sizes."""
    x = float(x)
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    s = f"{x:.{digits}g}"
    return s


def pair(got: float, want: float) -> tuple[str, str]:
    """Two numbers printed with as many digits as it takes for them to look different (up to 10)."""
    for digits in range(4, 11):
        a, b = fmt(got, digits), fmt(want, digits)
        if a != b:
            return a, b
    return f"{float(got)!r}", f"{float(want)!r}"


def _as_tensor(x):
    if torch.is_tensor(x):
        return x.detach()
    try:
        return torch.as_tensor(x)
    except Exception:
        return None


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> torch.Tensor:
    """Elementwise closeness (NaN is never close, equal infinities are)."""
    a, b = a.double(), b.double()
    return torch.isclose(a, b, rtol=tol, atol=tol) | ((a == b) & torch.isinf(a))


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
    """Runs one check: `with Checker("IoU") as c: ...` or `Checker.run(name, body)`; stops at the first failure."""

    def __init__(self, name: str):
        self.result = CheckResult(name)

    @classmethod
    def run(cls, name: str, body: Callable[["Checker"], None]) -> CheckResult:
        c = cls(name)
        try:
            body(c)
        except _Stop:
            pass
        return c.result

    # ---- calling the student's function -------------------------------------------------------------
    def call(self, case: str, fn, *args, expect_tensor: bool = True, error_hints: dict | None = None, **kwargs):
        """fn(*args) on copies of the inputs; fails (and stops) if it raises or returns no tensor.

        error_hints: {text in the exception's message: (mistake id, hint)} for errors a typical mistake raises.
        """
        args = tuple(a.clone() if torch.is_tensor(a) and not a.requires_grad else a for a in args)
        try:
            out = fn(*args, **kwargs)
        except NotImplementedError:
            self.fail("your function is not written yet (it raises NotImplementedError): replace that line with your code",
                      "not_implemented")
        except Exception as e:
            where = _student_line(fn, e.__traceback__)
            for text, (mid, hint) in (error_hints or {}).items():
                if text in str(e):
                    self.fail(f"{case}: your function raised {type(e).__name__}{where}: {hint}", mid)
            self.fail(f"{case}: your function raised {type(e).__name__}: {e}{where}", "raised")
        if out is None:
            self.fail(f"{case}: your function returned None: did you forget `return`?", "returned_none")
        if expect_tensor and not torch.is_tensor(out):
            kind = type(out).__name__
            if isinstance(out, (list, tuple)):
                self.fail(f"{case}: your function returned a {kind}; return one torch.Tensor (torch.stack or torch.tensor "
                          "turn a list into one)", "not_a_tensor")
            self.fail(f"{case}: your function returned {kind}; it should return a torch.Tensor", "not_a_tensor")
        return out

    # ---- verdicts ------------------------------------------------------------------------------------
    def fail(self, text: str, mistake: str | None = None) -> None:
        self.result.fail(text, mistake)
        raise _Stop

    def ok(self, text: str) -> None:
        self.result.ok(text)

    def compare(self, case: str, got, want: torch.Tensor, *, hint: str, mistakes: Mistakes | None = None,
                columns: Sequence[str] | None = None, row_name: str = "row", col_name: str | None = None,
                tol: float = 1e-4, exact_dtype: str | None = None, pairwise: bool = False) -> None:
        """Pass if `got` equals `want` (shape and values); else fail with the most specific hint there is.

        columns: names of the last dimension's entries (e.g. ("dx", "dy", "dw", "dh")), so a wrong component is named.
        row_name / col_name: what the rows and columns of a 2-D answer are (e.g. "boxes1[i]", "boxes2[j]").
        exact_dtype: "bool" or "int" when the answer must be a mask or indices (values compared exactly).
        pairwise: the answer is an (N, M) matrix of every pair (a 1-D answer then means "only pairs (i, i)").
        """
        want = _as_tensor(want)
        t = _as_tensor(got)
        if t is None:
            self.fail(f"{case}: your answer is a {type(got).__name__}, not a tensor or a number", "not_a_tensor")
        right = t.shape == want.shape and bool(_close(t, want, tol).all())
        for mid, (wrong, text) in ({} if right else mistakes or {}).items():  # a known mistake, whatever its shape
            w = _as_tensor(wrong)
            if w is None or w.shape != t.shape or t.numel() == 0:
                continue
            if w.shape == want.shape and bool(_close(w, want, tol).all()):
                continue  # on this case that mistake gives the right answer: it cannot be the one
            if bool(_close(t, w, tol).all()):
                self.fail(f"{case}: {text}", mid)
        if t.shape != want.shape:
            self.fail(f"{case}: {self._shape_hint(t.shape, want.shape, columns, pairwise)}", "not_pairwise" if pairwise and t.dim() == 1 else "shape")
        if exact_dtype == "bool" and t.dtype != torch.bool:
            if not bool(((t == 0) | (t == 1)).all()):
                self.fail(f"{case}: return a boolean mask (True = keep), not {t.dtype} values {t.flatten()[:6].tolist()}", "dtype")
            t = t.bool()
        if exact_dtype in ("bool", "int"):
            if t.is_floating_point() and exact_dtype == "int" and not bool((t == t.round()).all()):
                self.fail(f"{case}: return whole numbers (indices), got {t.flatten()[:6].tolist()}", "dtype")
            good = t.long() == want.long()
        else:
            if not t.is_floating_point() and want.is_floating_point():
                t = t.double()
            bad_values = ~torch.isfinite(t.double()) & torch.isfinite(want.double())
            if bad_values.any():
                i = tuple(int(v) for v in torch.nonzero(bad_values)[0])
                self.fail(f"{case}: your answer has {fmt(float(t[i]))} at index {list(i) if len(i) > 1 else i[0]}, where "
                          f"{fmt(float(want[i]))} is expected. {hint}", "not_finite")
            good = _close(t, want, tol)
        if bool(good.all()):
            self.ok(case)
            return
        self.fail(f"{case}: {self._where(t, want, good, columns, row_name, col_name)} Hint: {hint}", None)

    def require(self, case: str, condition: bool, text: str, mistake: str | None = None) -> None:
        """Pass `case` when `condition` holds, else fail with `text`."""
        if condition:
            self.ok(case)
        else:
            self.fail(f"{case}: {text}", mistake)

    # ---- explanations --------------------------------------------------------------------------------
    @staticmethod
    def _shape_hint(got: torch.Size, want: torch.Size, columns, pairwise: bool = False) -> str:
        g, w = tuple(got), tuple(want)
        base = f"your answer has shape {g}, expected {w}"
        if pairwise and len(g) == 1 and len(w) == 2:
            return (f"{base}: one value per box, not one per pair. Compare every box of the first set with every box of "
                    "the second: index them [:, None, :] and [None, :, :] so that they broadcast to (N, M, ...)")
        if len(g) == 2 and len(w) == 2 and g == w[::-1] and g != w:
            what = f"one row per item, with columns {', '.join(columns)}" if columns else "rows and columns swapped"
            return f"{base}: that is the transpose ({what}; stack along dim=1, or check which set indexes the rows)"
        if len(g) == 0 or (g == (1,) and w not in ((1,), ())):
            return f"{base}: a single number. Return one value per element: no sum, mean or .item() at the end"
        if len(g) < len(w) and g == w[:len(g)]:
            return f"{base}: the last dimension is missing (did you sum, take the max or index over it?)"
        if len(g) < len(w) and g == w[len(w) - len(g):]:
            return f"{base}: the first dimension is missing (did you sum, take the max or index over it?)"
        if len(g) == 1 and len(w) > 1 and g[0] == int(torch.tensor(w).prod()):
            return f"{base}: the right number of values, flattened. Keep the shape (reshape, or stack along a new dimension)"
        if len(g) == len(w) and sorted(g) == sorted(w):
            return f"{base}: the same sizes in another order (check which dimension is which)"
        return base

    @staticmethod
    def _where(t, want, good, columns, row_name, col_name) -> str:
        """Which components or elements differ, and the first difference with enough digits to see it."""
        idx = tuple(int(v) for v in torch.nonzero(~good)[0])

        def value_at(x, i):
            v = x[i]
            return float(v) if not isinstance(v, bool) else float(v)

        g, w = pair(value_at(t, idx), value_at(want, idx))
        if columns and t.dim() >= 1 and t.shape[-1] == len(columns):
            col_ok = good.reshape(-1, len(columns)).all(dim=0)
            wrong = [c for c, ok in zip(columns, col_ok.tolist()) if not ok]
            right = [c for c, ok in zip(columns, col_ok.tolist()) if ok]
            rows = int((~good).reshape(-1, len(columns)).any(dim=1).sum())
            total = good.reshape(-1, len(columns)).shape[0]
            where = (f"{' and '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} wrong"
                     + (f" ({', '.join(right)} {'is' if len(right) == 1 else 'are'} right)" if right else "")
                     + (f" in {rows} of {total} rows" if total > 1 else "") + ". ")
            row = f"row {idx[0]}, " if t.dim() == 2 else ""
            return where + f"First difference: {row}{columns[idx[-1]]} = {g}, expected {w}."
        if t.dim() == 2:
            rows, cols = (~good).any(dim=1), (~good).any(dim=0)
            cn = col_name or "column"
            return (f"{int((~good).sum())} of {good.numel()} values differ ({int(rows.sum())} of {t.shape[0]} {row_name}s, "
                    f"{int(cols.sum())} of {t.shape[1]} {cn}s). First difference: [{idx[0]}, {idx[1]}] "
                    f"({row_name} {idx[0]} with {cn} {idx[1]}) = {g}, expected {w}.")
        if t.dim() == 0:
            return f"got {g}, expected {w}."
        if t.dim() == 1:
            n = int((~good).sum())
            return f"{n} of {t.numel()} values differ. First difference: element {idx[0]} = {g}, expected {w}."
        return f"{int((~good).sum())} of {good.numel()} values differ. First difference at {list(idx)}: {g}, expected {w}."

    # ---- gradients -----------------------------------------------------------------------------------
    def gradient(self, case: str, fn, x: torch.Tensor, args: tuple, want_grad: torch.Tensor, *, hint: str,
                 mistakes: Mistakes | None = None, tol: float = 1e-4) -> None:
        """d(sum of fn(x, *args)) / dx, compared with `want_grad` (NaN or inf named as such)."""
        x = x.detach().clone().requires_grad_(True)
        out = self.call(case, fn, x, *args)
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
