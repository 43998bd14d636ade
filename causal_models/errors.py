"""The one marker of bad input: every error a user can cause derives from `UserError`.

The command line prints a `UserError` as one line (`align-search: error: ...`) and exits 2;
any other exception is a bug and keeps its traceback. Each package's own error classes
(configs, tasks, pairs, templates, sites, models, persistence, tracking, cluster, steering,
sharing) derive from it, usually together with the built-in they refine (`ValueError`, ...),
so code that catches the built-in keeps working. It lives here, in the leftmost package, so
every package can import it (imports point one way: causal_models <- alignment <- cluster <- search).
"""


class UserError(Exception):
    """Bad input: a message that says what was wrong and how to fix it, shown without a traceback."""
