"""Build the committed notebooks from the lesson sources (retinanet_lab/lessons/NN_name.py):

    python tools/build_lessons.py            # every lesson: student edition, executed, into notebooks/; docs/teacher_guide.md
    python tools/build_lessons.py 02 05      # only lessons 02 and 05 (and the guide)
    python tools/build_lessons.py --check    # exit 1 when a notebook or the guide is out of date with its source

The sources are what a teacher edits (in JupyterLab: right-click the .py file, Open With > Notebook, with jupytext
installed). notebooks/*.ipynb are the student edition with outputs, so GitHub and Voilà show the lessons without
any solution; `retinanet-lab lessons DIR [--teacher]` writes fresh copies of either edition for a class.
Executing all lessons takes about two minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat

from retinanet_lab.lessons import LESSONS, edition, teacher_guide

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
GUIDE = ROOT / "docs" / "teacher_guide.md"


def cells_of(nb) -> list[tuple]:
    """What must agree between a source and its notebook: each cell's kind, text and tags."""
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", []))) for c in nb.cells]


def out_of_date() -> list[str]:
    """The notebooks (and the guide) that differ from what their sources give."""
    stale = []
    for src in LESSONS:
        path = NOTEBOOKS / f"{src.stem}.ipynb"
        if not path.exists() or cells_of(nbformat.read(path, as_version=4)) != cells_of(edition(src)):
            stale.append(str(path.relative_to(ROOT)))
    extra = sorted({p.stem for p in NOTEBOOKS.glob("*.ipynb")} - {p.stem for p in LESSONS})
    stale += [f"notebooks/{name}.ipynb (no source)" for name in extra]
    if not GUIDE.exists() or GUIDE.read_text(encoding="utf-8") != teacher_guide():
        stale.append(str(GUIDE.relative_to(ROOT)))
    return stale


def execute(nb, timeout: int = 600):
    from nbclient import NotebookClient

    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("only", nargs="*", help="lesson number prefixes, e.g. 02 07 (default: all)")
    p.add_argument("--check", action="store_true", help="only report what is out of date (exit 1 if anything is)")
    args = p.parse_args(argv)
    if args.check:
        stale = out_of_date()
        for s in stale:
            print("out of date:", s)
        return 1 if stale else 0
    NOTEBOOKS.mkdir(exist_ok=True)
    for src in LESSONS:
        if args.only and not any(src.stem.startswith(o) for o in args.only):
            continue
        t0 = time.perf_counter()
        nb = execute(edition(src))
        path = NOTEBOOKS / f"{src.stem}.ipynb"
        tmp = path.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
        print(f"wrote {path.relative_to(ROOT)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    GUIDE.parent.mkdir(exist_ok=True)
    GUIDE.write_text(teacher_guide(), encoding="utf-8")
    print(f"wrote {GUIDE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
