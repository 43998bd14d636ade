"""Models and shared interventions from the Hugging Face Hub, through its own cache.

Wherever a model path is taken, a Hub id works too: `org/name`, or `org/name@revision` for a
branch, tag or commit. It resolves with huggingface_hub's `snapshot_download`, the machinery
under `from_pretrained`: the standard cache (`HF_HOME`, `HF_HUB_CACHE`), `HF_HUB_OFFLINE=1`
(read the cache only, never the network), and the token from the environment (`HF_TOKEN`) for
gated or private models. Only what loading needs is fetched (config, safetensors weights,
tokenizer files, the model's own Python files, which run only with --trust-remote-code), never
a pickled `pytorch_model.bin`; the snapshot folder then loads like any
local folder, so every check on a local folder (safetensors only, no remote code) holds for
Hub models too. A local path always wins over a Hub id of the same spelling.

A missing repository, no network with nothing cached, or a gated model is one line
(`HubError`) that says which and what to do.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from causal_models.errors import UserError

# org/name or name, each part letters, digits, '-', '_', '.'; then an optional @revision.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?)(?:@(?P<revision>[\w./-]+))?$")
# What loading a model needs from its repository: never pickles, never other frameworks' weights. Python
# files come too but never run unless --trust-remote-code says so (alignment/models.py checks auto_map).
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "tokenizer*", "*.jinja", "*.py"]


class HubError(UserError, ValueError):
    """A Hub id that cannot be resolved: no such repository or revision, no network, gated."""


def hub_id(path: str | Path) -> tuple[str, str | None] | None:
    """(repository, revision) when `path` names a Hub model rather than a local path, else None.

    A path that exists locally, starts like a path (`/`, `.`, `~`), has more than one `/`, ends
    in .gguf, or whose first part is a local folder (`models/missing`) is a local path.
    """
    text = str(path)
    match = _HUB_ID.match(text)
    if match is None or Path(text).exists() or text.endswith(".gguf"):
        return None
    repo = match.group("repo")
    if "/" in repo and Path(repo.split("/")[0]).is_dir():
        return None
    return repo, match.group("revision")


def local_path(path: str | Path) -> Path:
    """The local file or folder of a model path: itself, or the cached snapshot of a Hub id."""
    found = hub_id(path)
    if found is None:
        return Path(path)
    return _model_snapshot(*found)


@functools.lru_cache(maxsize=16)
def _model_snapshot(repo: str, revision: str | None) -> Path:
    """Resolved once per process: loading a model reads its config, tokenizer and weights in turn."""
    return snapshot(repo, revision, MODEL_FILES, what="model")


def snapshot(repo: str, revision: str | None, patterns: list[str] | None, what: str) -> Path:
    """The local snapshot folder of a Hub repository (from the cache, downloading what is missing)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = f"{repo}@{revision}" if revision else repo
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=patterns))
    except GatedRepoError:
        raise HubError(f"{what} {name!r} is gated on the Hugging Face Hub: accept its terms at "
                       f"https://huggingface.co/{repo} and set HF_TOKEN to a token of that account") from None
    except RevisionNotFoundError:
        raise HubError(f"revision of {what} {repo!r} must be a branch, tag or commit of the repository, got "
                       f"{revision!r}") from None
    except RepositoryNotFoundError:
        raise HubError(f"{what} {name!r} must be a local path or a Hugging Face Hub repository, got neither (no "
                       f"such folder here, and no such repository on the Hub; a private one needs HF_TOKEN)") from None
    except LocalEntryNotFoundError:
        raise HubError(f"{what} {name!r} must be a local path, or a Hub id in the Hugging Face cache when the Hub "
                       f"cannot be reached (HF_HUB_OFFLINE=1 or no network), got neither: no such folder here, no "
                       f"cached copy. Download it once where the network is (`hf download {repo}`), with HF_HOME on "
                       f"storage this machine reads") from None
    except HFValidationError as error:
        raise HubError(f"{what} {name!r} must be a local path or a Hub id (org/name), got: {error}") from None
