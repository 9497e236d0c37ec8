"""The lessons, authored once, and the two editions made from them.

Each lesson is one text file in this folder, `NN_name.py`, in jupytext's "percent" format: cells begin with
`# %%` (code) or `# %% [markdown]`, so the file reads as a script, diffs as text, and JupyterLab (with jupytext,
part of the [dev] extra) opens and edits it as a notebook. Two markings make the editions:

- a cell tagged `teacher` (`# %% [markdown] tags=["teacher"]`) is in the teacher's edition only: notes for
  the teacher, answers to the questions;
- inside an exercise cell (tagged `exercise`), the lines between `### BEGIN SOLUTION` and `### END SOLUTION`
  are the solution: the teacher's edition keeps them, the student edition replaces them by
  `raise NotImplementedError`, so no solution source or output is anywhere in it.

    write_edition("course/", teacher=False)     # what `retinanet-lab lessons course/` does
    notebook = edition(LESSONS[2], teacher=True)  # one lesson as an nbformat notebook

The committed `notebooks/*.ipynb` are the student edition, executed (`python tools/build_lessons.py`);
a test fails when one of them is out of date with its source here.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat

__all__ = ["LESSONS_DIR", "LESSONS", "TEACHER", "EXERCISE", "QUESTIONS", "edition", "lesson_title", "write_edition",
           "strip_solutions", "teacher_guide", "VOILA_TEMPLATE", "voila_command"]

LESSONS_DIR = Path(__file__).resolve().parent
LESSONS = sorted(p for p in LESSONS_DIR.glob("[0-9][0-9]_*.py"))
TEACHER, EXERCISE, QUESTIONS = "teacher", "exercise", "questions"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
VOILA_TEMPLATE = "retinanet-lab"  # voila/templates/retinanet-lab here: Voila's lab template less its links to a CDN
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}  # what JupyterLab writes


def _language_info() -> dict:
    """What the Python kernel that will run a lesson reports about itself. JupyterLab writes it into the notebook when
    the kernel connects; a copy that already holds the same is not marked modified on opening."""
    try:
        from ipykernel.ipkernel import IPythonKernel

        return dict(IPythonKernel.language_info)
    except ImportError:  # no Jupyter here: the same fields, as ipykernel writes them
        return {"codemirror_mode": {"name": "ipython", "version": sys.version_info[0]}, "file_extension": ".py",
                "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python", "pygments_lexer": "ipython3",
                "version": sys.version.split()[0]}


def _read(path: Path) -> nbformat.NotebookNode:
    """A lesson source as a notebook (cells and their tags; the file's own metadata is not used)."""
    import jupytext

    nb = jupytext.reads(Path(path).read_text(encoding="utf-8"), fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    return nb


def strip_solutions(source: str) -> str:
    """The student's version of an exercise cell: each BEGIN/END SOLUTION block becomes `raise NotImplementedError`."""
    out, skipping = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# your code here", f"{indent}raise NotImplementedError"]
            skipping = True
        elif stripped == END:
            if not skipping:
                raise ValueError(f"{END} without {BEGIN}")
            skipping = False
        elif not skipping:
            out.append(line)
    if skipping:
        raise ValueError(f"{BEGIN} without {END}")
    return "\n".join(out)


def _without_markers(source: str) -> str:
    return "\n".join(line for line in source.split("\n") if line.strip() not in (BEGIN, END))


def lesson_title(path: Path) -> str:
    """The lesson's title: its first markdown heading, without the '# N.' prefix."""
    nb = _read(path)
    first = next(c for c in nb.cells if c.cell_type == "markdown")
    heading = first.source.split("\n")[0].lstrip("# ").strip()
    return re.sub(r"^\d+\.\s*", "", heading)


def edition(path: Path, teacher: bool = False) -> nbformat.NotebookNode:
    """One lesson as a notebook of the student edition (no solutions, no teacher cells) or the teacher's."""
    path = Path(path)
    nb = _read(path)
    cells = []
    for i, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        if TEACHER in tags and not teacher:
            continue
        if cell.cell_type == "code" and (BEGIN in cell.source or END in cell.source):
            if EXERCISE not in tags:
                raise ValueError(f"{path.name}, cell {i}: a cell with a solution must be tagged {EXERCISE!r}")
            cell.source = _without_markers(cell.source) if teacher else strip_solutions(cell.source)
        cell.id = f"{path.stem[:2]}-{i:03d}"  # stable ids: rebuilding gives the same file, JupyterLab adds none
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    out = nbformat.v4.new_notebook(cells=cells)
    out.nbformat, out.nbformat_minor = 4, 5
    out.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": _language_info(),
                    "retinanet_lab": {"lesson": path.stem, "edition": "teacher" if teacher else "student"}}
    if teacher:
        out.cells.insert(0, nbformat.v4.new_markdown_cell(
            "> **Teacher's edition**: solutions, answers and notes for the teacher. "
            "Students get theirs with `retinanet-lab lessons DIR`.", id=f"{path.stem[:2]}-teacher"))
    return out


def teacher_guide() -> str:
    """The teacher's guide (docs/teacher_guide.md): for every lesson its opening (objectives, prerequisites, time,
    paper sections), then its teacher cells and questions in order (what the demos show and what to say,
    misconceptions, what to run before class, the questions and their answers)."""
    parts = ["# Teacher's guide\n",
             "Generated from the lessons (`retinanet_lab/lessons/`) by `python tools/build_lessons.py`; edit the lessons, "
             "not this file. The teacher's edition of the notebooks (`retinanet-lab lessons DIR --teacher`) has the same "
             "notes in place, next to the cells they are about, and the solutions of the exercises.\n",
             "| lesson | time in class | runs in |", "| --- | --- | --- |"]
    bodies = []
    for path in LESSONS:
        nb = _read(path)
        head = next(c for c in nb.cells if c.cell_type == "markdown").source
        title = head.split("\n")[0].lstrip("# ").strip()
        fields = dict(re.findall(r"^[-*] \*\*(Time|Runs in)\.\*\* (.+)$", head, flags=re.M))
        parts.append(f"| {title} | {fields.get('Time', '').replace(' in class', '')} | {fields.get('Runs in', '')} |")
        body = [f"## {title}", "", "\n".join(head.split("\n")[1:]).strip(), ""]
        for cell in nb.cells:
            tags = cell.metadata.get("tags", [])
            if cell.cell_type == "markdown" and (TEACHER in tags or QUESTIONS in tags):
                body += [cell.source.strip(), ""]
        bodies.append("\n".join(body))
    return "\n".join(parts) + "\n\n" + "\n".join(bodies).rstrip() + "\n"


def write_edition(directory: str | os.PathLike, teacher: bool = False, overwrite: bool = False) -> list[Path]:
    """Write every lesson into `directory` as notebooks (created if needed); refuses to overwrite unless asked."""
    directory = Path(directory)
    targets = [directory / f"{p.stem}.ipynb" for p in LESSONS]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{directory} already has {len(existing)} of the lessons ({existing[0].name}, ...): "
                              "choose another folder, or pass --force to overwrite them")
    directory.mkdir(parents=True, exist_ok=True)
    for src, target in zip(LESSONS, targets):
        tmp = target.with_suffix(".ipynb.tmp")
        nbformat.write(edition(src, teacher), tmp)
        os.replace(tmp, target)
    if teacher:
        guide = directory / "teacher_guide.md"
        guide.write_text(teacher_guide(), encoding="utf-8")
        targets.append(guide)
    return targets


def voila_command(target: str | os.PathLike, *extra: str) -> tuple[list[str], dict]:
    """The command and environment that show a lesson (or a folder of lessons) as an app without code, offline:
    Voila with this package's template, found through JUPYTER_PATH (the template ships inside the package)."""
    import shutil

    voila = shutil.which("voila", path=os.path.dirname(sys.executable)) or shutil.which("voila")
    if voila is None:
        raise FileNotFoundError("Voila is not installed here: pip install voila")
    paths = [str(LESSONS_DIR), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    env = {**os.environ, "JUPYTER_PATH": os.pathsep.join(paths)}
    return [voila, f"--template={VOILA_TEMPLATE}", str(target), *extra], env
