"""The task registry: built-in tasks by name, and the user's own tasks by `file.py:NAME` or `module:NAME`.

A user task is any `Task` object (or a zero-argument function returning one) in the user's
own Python file or importable module; it works everywhere a built-in one does.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

from causal_models.errors import UserError
from causal_models.task import Task, UnknownNameError, unknown_name
from causal_models.tasks.hierarchical_equality import HIERARCHICAL_EQUALITY
from causal_models.tasks.ioi import IOI
from causal_models.tasks.price_tagging import PRICE_TAGGING
from causal_models.tasks.word_logic import WORD_LOGIC


class TaskFileError(UserError, ImportError):
    """A user's task file that does not import: a syntax error, an exception, or exit() while importing."""


TASKS: dict[str, Task] = {task.name: task for task in (PRICE_TAGGING, HIERARCHICAL_EQUALITY, WORD_LOGIC, IOI)}


def get_task(name: str) -> Task:
    """A built-in task by name, or a user task given as `path/to/file.py:NAME` or `package.module:NAME`."""
    if name in TASKS:
        return TASKS[name]
    if ":" in name:
        return _load_user_task(name)
    raise unknown_name("task", name, TASKS,
                       " Or give your own as path/to/file.py:NAME or package.module:NAME "
                       "(docs/your-own-task.md).")


@contextlib.contextmanager
def _import_guard(what: str, path: Path | None, module_name: str) -> Iterator[None]:
    """Turn whatever importing the user's code does wrong into one line naming the file and the line."""
    try:
        yield
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # SystemExit too: exit() in the file would look like success
        sys.modules.pop(module_name, None)  # never leave a half-imported module behind
        if isinstance(error, ModuleNotFoundError) and error.name and module_name.startswith(error.name):
            raise UnknownNameError(f"{what} cannot be imported: {error}") from None
        raise TaskFileError(f"{what} must import without errors, got {_describe(error, path)}") from None


def _describe(error: BaseException, path: Path | None) -> str:
    """The error's kind, its line in the user's file, and its first line."""
    if isinstance(error, SystemExit):
        return f"exit({error.code!r}) while importing it"
    if isinstance(error, SyntaxError):
        return f"{type(error).__name__} at line {error.lineno}: {error.msg}"
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if path is not None and Path(frame.filename).resolve() == path.resolve()]
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}{f' at line {lines[-1]}' if lines else ''}: {first}"


def _load_user_task(spec: str) -> Task:
    location, _, attribute = spec.rpartition(":")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise UnknownNameError(f"task file must exist, got {location!r} (from --task {spec!r})")
        module_name = f"align_search_user_task_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise UnknownNameError(f"task file {location!r} cannot be imported as Python")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        with _import_guard(f"task file {location!r}", path, module_name):
            module_spec.loader.exec_module(module)
    else:
        with _import_guard(f"task module {location!r}", None, location):
            module = importlib.import_module(location)
    if not hasattr(module, attribute):
        tasks = [n for n, v in vars(module).items() if isinstance(v, Task)]
        raise UnknownNameError(f"{location!r} must define {attribute!r}; Task objects it defines: {tasks}")
    task = getattr(module, attribute)
    if callable(task) and not isinstance(task, Task):
        task = task()
    if not isinstance(task, Task):
        raise UnknownNameError(f"{spec!r} must be a causal_models.Task, got {type(task).__name__}")
    return task


__all__ = ["TASKS", "get_task"]
