"""Output folders: a command never overwrites what a user made, and its output appears whole or not at all.

Every command that writes a folder (`data`, `align`, `train-model`, `share`, `convert-gguf`
with `--out`; `sweep --out` in search/sweep.py) first checks it: a new or empty folder is
fine; one that holds files is refused, naming them, unless `--overwrite` says to replace the
files this command writes there (other files are never touched). The short commands then
write into a hidden folder beside it (`.NAME.writing-PID`) and move the result into place
only when everything is written, so a failure, a full disk or Ctrl-C leaves no half-made
folder and the previous files as they were; an error names the file in the folder the user
asked for, not the hidden one. `align` writes in place (a long run people watch), after every
input is checked; a folder it made and that failed before training is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from causal_models.errors import UserError


class OutputFolderError(UserError, ValueError):
    """An output folder that is a file, sits under a file, or holds files the command would replace."""


def check_output_folder(path: Path, flag: str = "--out", overwrite: bool = False) -> None:
    """Raise OutputFolderError unless `path` may receive a command's output (writes nothing)."""
    if path.exists() and not path.is_dir():
        raise OutputFolderError(f"{flag} must be a folder, got {str(path)!r}, which is a file. Choose another {flag}")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputFolderError(f"{flag} must be a folder, got {str(path)!r}, which is under the file "
                                f"{str(blocking)!r}. Choose another {flag}")
    held = sorted(entry.name for entry in path.iterdir()) if path.is_dir() else []
    if held and not overwrite:
        shown = ", ".join(held[:8]) + (f" and {len(held) - 8} more" if len(held) > 8 else "")
        raise OutputFolderError(f"{flag} must be a new or empty folder, got {str(path)!r}, which holds {shown}. "
                                f"Choose another {flag}, or pass --overwrite to replace what this command writes "
                                f"there (other files are kept)")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[Path]:
    """A hidden folder to write into; on success its entries replace those of `path` (made if missing)."""
    made = _missing_parents(path)
    temporary = path.parent / f".{path.name}.writing-{os.getpid()}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.mkdir()
        yield temporary
        _move_into(temporary, path)
    except OSError as error:
        raise _named(error, temporary, path) from error
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        for parent in made:  # parents made for an output that never appeared
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def _missing_parents(path: Path) -> list[Path]:
    """The parents of `path` that do not exist yet, deepest first."""
    return [p for p in path.parents if not p.exists()]


def _move_into(temporary: Path, path: Path) -> None:
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        os.replace(temporary, path)  # one rename: the folder appears whole
        return
    for entry in sorted(temporary.iterdir()):
        target = path / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(entry, target)


def _named(error: OSError, temporary: Path, path: Path) -> OSError:
    """The error, naming the file under `path` the user asked for: not the hidden folder, nor a file copied
    from (a failed copy names its source first, its destination second)."""
    if not error.errno:
        return error
    written = [str(name) for name in (error.filename, error.filename2) if name and str(name).startswith(
        str(temporary))]
    name = str(path) + written[0][len(str(temporary)):] if written else str(path)
    return type(error)(error.errno, error.strerror, name)
