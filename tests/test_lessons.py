"""The lessons as a course: authored once (retinanet_lab/lessons/*.py), a student edition with no solution anywhere,
a teacher's edition whose solutions pass their own checks, committed notebooks that match their sources, a guide
that covers every lesson, and `retinanet-lab lessons DIR` working from an installed wheel."""

import contextlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from retinanet_lab.lessons import BEGIN, END, EXERCISE, LESSONS, QUESTIONS, TEACHER, edition, strip_solutions, teacher_guide

ROOT = Path(__file__).resolve().parent.parent
HEADER_FIELDS = ("Objectives", "Prerequisites", "Time", "Runs in", "Paper")


def _build_tool():
    spec = importlib.util.spec_from_file_location("build_lessons", ROOT / "tools" / "build_lessons.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _solution_lines(src: Path) -> list[str]:
    """The distinctive lines of every solution block of a lesson source (what must never reach a student)."""
    lines, inside = [], False
    for line in src.read_text(encoding="utf-8").split("\n"):
        text = line.lstrip("# ").strip() if line.startswith("# ") and not inside else line.strip()
        if text == BEGIN:
            inside = True
        elif text == END:
            inside = False
        elif inside and len(text) > 12 and not text.startswith(("#", '"""', "return ")):
            lines.append(text)
    return lines


def _exercise_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code" and EXERCISE in c.metadata.get("tags", [])]


def _run(source: str) -> str:
    """Execute a cell in a fresh namespace (exercise cells are self-contained), returning what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<exercise cell>", "exec"), {"__name__": "__lesson__"})
    return out.getvalue()


def test_the_lessons_are_00_to_10_and_each_opens_with_objectives_prerequisites_time_and_paper():
    assert [p.stem[:2] for p in LESSONS] == [f"{i:02d}" for i in range(11)]
    for src in LESSONS:
        head = next(c for c in edition(src).cells if c.cell_type == "markdown").source
        assert re.match(rf"# {int(src.stem[:2])}\. \S", head), f"{src.name}: the first cell must be the lesson's title"
        for field in HEADER_FIELDS:
            assert re.search(rf"^- \*\*{field}\.\*\* \S", head, flags=re.M), f"{src.name}: no '{field}' in its opening"


def test_lessons_01_to_10_each_have_a_checked_exercise_a_recap_questions_and_answers():
    for src in LESSONS[1:]:
        teacher = edition(src, teacher=True)
        exercises = _exercise_cells(teacher)
        assert exercises, f"{src.name} has no exercise"
        for cell in exercises:
            assert re.search(r"print\(check_\w+\(my_\w+\)\)", cell), f"{src.name}: an exercise cell must end by checking"
        text = "\n".join(c.source for c in teacher.cells if c.cell_type == "markdown")
        assert "## Recap" in text, src.name
        questions = [c for c in teacher.cells if QUESTIONS in c.metadata.get("tags", [])]
        assert questions and len(re.findall(r"^\d\. ", questions[0].source, flags=re.M)) >= 2, src.name
        notes = "\n".join(c.source for c in teacher.cells if TEACHER in c.metadata.get("tags", []))
        for part in ("### Answers", "Misconceptions", "Before class"):
            assert part in notes, f"{src.name}: the teacher's notes have no '{part}'"


def test_student_edition_has_no_solution_no_answer_and_no_teacher_note():
    for src in LESSONS:
        student = edition(src)
        text = json.dumps([c.source for c in student.cells])
        assert BEGIN not in text and END not in text, src.name
        assert not any(TEACHER in c.metadata.get("tags", []) for c in student.cells), src.name
        for line in _solution_lines(src):
            assert line not in text, f"{src.name}: the student edition shows a solution line: {line}"
        for cell in _exercise_cells(student):
            assert "raise NotImplementedError" in cell, src.name


def test_committed_notebooks_show_no_solution_and_no_passing_check():
    for src in LESSONS:
        nb = nbformat.read(ROOT / "notebooks" / f"{src.stem}.ipynb", as_version=4)
        everything = json.dumps(nb)
        for line in _solution_lines(src):
            assert json.dumps(line)[1:-1] not in everything, f"{src.stem}.ipynb shows a solution line: {line}"
        assert "all checks passed" not in everything, f"{src.stem}.ipynb shows a passing check (a solution's output)"
        assert nb.metadata["retinanet_lab"]["edition"] == "student"


def test_committed_notebooks_are_up_to_date_with_their_sources_and_the_guide_too():
    stale = _build_tool().out_of_date()
    assert not stale, f"out of date (run `python tools/build_lessons.py`): {stale}"


def test_committed_notebooks_store_what_jupyterlab_writes():
    """Opening a lesson in JupyterLab must not modify it: the kernelspec JupyterLab writes, nbformat 4.5 cell ids."""
    for src in LESSONS:
        nb = nbformat.read(ROOT / "notebooks" / f"{src.stem}.ipynb", as_version=4)
        assert nb.metadata["kernelspec"] == {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
        assert (nb.nbformat, nb.nbformat_minor) == (4, 5) and all("id" in c for c in nb.cells)
        assert all(c.outputs for c in nb.cells if c.cell_type == "code" and c.source.strip()), f"{src.stem}: not executed"


def test_teacher_solutions_pass_their_checks_and_student_cells_say_not_written_yet():
    for src in LESSONS[1:]:
        for cell in _exercise_cells(edition(src, teacher=True)):
            out = _run(cell)
            assert "all checks passed" in out and "✘" not in out, f"{src.name}: the solution fails its check:\n{out}"
        for cell in _exercise_cells(edition(src)):
            out = _run(cell)
            assert "not written yet" in out and "all checks passed" not in out, f"{src.name}:\n{out}"


def test_strip_solutions_keeps_the_indentation_and_rejects_unbalanced_markers():
    src = f"def f(x):\n    {BEGIN}\n    return x + 1\n    {END}\n\nprint(f)"
    assert strip_solutions(src) == "def f(x):\n    # your code here\n    raise NotImplementedError\n\nprint(f)"
    with pytest.raises(ValueError, match="without"):
        strip_solutions(f"def f():\n    {BEGIN}\n    return 1")


def test_the_guide_covers_every_lesson():
    guide = teacher_guide()
    for src in LESSONS:
        title = next(c for c in edition(src).cells if c.cell_type == "markdown").source.split("\n")[0].lstrip("# ")
        assert f"## {title}" in guide
    assert guide.count("### Answers") == len(LESSONS) - 1 and guide.count("Before class") >= len(LESSONS)


def test_lessons_command_writes_the_editions_and_never_overwrites_silently(tmp_path, capsys):
    from retinanet_lab.cli import main

    assert main(["lessons", str(tmp_path / "class")]) == 0
    written = sorted(p.name for p in (tmp_path / "class").iterdir())
    assert written == sorted(f"{p.stem}.ipynb" for p in LESSONS)
    student = "".join((tmp_path / "class" / name).read_text() for name in written)
    assert BEGIN not in student and "Teacher's edition" not in student
    assert main(["lessons", str(tmp_path / "class")]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["lessons", str(tmp_path / "class"), "--force"]) == 0
    assert main(["lessons", str(tmp_path / "teacher"), "--teacher"]) == 0
    teacher = "".join(p.read_text() for p in (tmp_path / "teacher").glob("*.ipynb"))
    assert "Teacher's edition" in teacher and "### Answers" in teacher
    assert (tmp_path / "teacher" / "teacher_guide.md").read_text() == teacher_guide()


def test_lessons_and_classroom_files_ship_in_the_wheel(tmp_path):
    """From a plain `pip install` (a wheel, not a clone), the lessons command and the classroom model work."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                        str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("retinanet_lab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for src in LESSONS:
        assert f"retinanet_lab/lessons/{src.name}" in names
    for asset in ("classroom_model.pt", "classroom_model.json", "ablation_loss.json", "ablation_prior.json"):
        assert f"retinanet_lab/assets/{asset}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import sys, retinanet_lab; from retinanet_lab.cli import main; from retinanet_lab.classroom import load_classroom_model;"
            "print(retinanet_lab.__file__); assert load_classroom_model().num_classes == 5; sys.exit(main(['lessons', 'course']))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("RETINANET_LAB_ASSETS", None)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(site)), f"the test imported {r.stdout.splitlines()[0]}, not the wheel's package"
    assert len(list((tmp_path / "course").glob("*.ipynb"))) == len(LESSONS)
