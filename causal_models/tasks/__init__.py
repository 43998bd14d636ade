"""The task registry: built-in tasks by name, and the user's own tasks by `file.py:NAME` or `module:NAME`.

A user task is any `Task` object (or a zero-argument function returning one) in the user's
own Python file or importable module; it works everywhere a built-in one does.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from causal_models.task import Task, UnknownNameError, unknown_name
from causal_models.tasks.hierarchical_equality import HIERARCHICAL_EQUALITY
from causal_models.tasks.ioi import IOI
from causal_models.tasks.price_tagging import PRICE_TAGGING
from causal_models.tasks.word_logic import WORD_LOGIC

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
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as error:
            raise UnknownNameError(f"task module {location!r} cannot be imported: {error}") from None
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
