"""Helpers shared by tests: tiny random models built in memory, local ports, the processes a test started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from alignment.results import TrialResult, UntrainedResult

T = TypeVar("T")


def tiny_model(family: str, vocab_size: int, layers: int = 2, hidden: int = 32, seed: int = 0,
               **options: object) -> torch.nn.Module:
    """A random model of `family` ("gpt2", "llama", "qwen2", "mistral", "gpt_neox"); `options` go to its config."""
    torch.manual_seed(seed)
    if family == "gpt2":
        config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=2, vocab_size=vocab_size, n_positions=128,
                            bos_token_id=2, eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            **options)
        return GPT2LMHeadModel(config).eval().requires_grad_(False)
    if family == "gpt_neox":
        neox = GPTNeoXConfig(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_attention_heads=2, vocab_size=vocab_size, max_position_embeddings=128,
                             rotary_pct=0.5, bos_token_id=2, eos_token_id=2, **options)
        return GPTNeoXForCausalLM(neox).eval().requires_grad_(False)
    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
               "mistral": (MistralConfig, MistralForCausalLM)}
    config_class, model_class = classes[family]
    config = config_class(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=2 * hidden,
                          num_attention_heads=2, num_key_value_heads=1, vocab_size=vocab_size,
                          max_position_embeddings=128, bos_token_id=2, eos_token_id=2, pad_token_id=0, **options)
    return model_class(config).eval().requires_grad_(False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the time of asking.

    Only for a port that must stay closed (a server that does not answer). A server of the test's
    own is started with `start_on_free_port`: between asking and binding, another process may
    take the port.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PortTaken(Exception):
    """Raised by a `start` given to `start_on_free_port` when its server could not bind its port."""


def start_on_free_port(start: Callable[[int], T], attempts: int = 5) -> T:
    """`start(port)` on a port free now; when another process took it first (PortTaken), a new port."""
    for _ in range(attempts - 1):
        with contextlib.suppress(PortTaken):
            return start(free_port())
    return start(free_port())


def session_processes(session: int) -> set[int]:
    """Live (not zombie) processes of a session, read from /proc.

    A process started with `start_new_session=True` leads a session of its own; Ray's head
    processes join its process group, but its workers make process groups of their own, so
    only the session holds them all.
    """
    found = set()
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else []
        if fields and fields[0] != "Z" and int(fields[3]) == session:
            found.add(int(entry))
    return found


def kill_session(session: int, seconds: float = 30) -> None:
    """SIGKILL every process of `session` (one this test started), by PID; fail if any outlives `seconds`."""
    deadline = time.time() + seconds
    while left := session_processes(session):
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert time.time() < deadline, f"processes {sorted(left)} of session {session} outlived SIGKILL"
        time.sleep(0.2)


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after "pid (command) ": state ppid pgrp session ... (empty once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return []
    return stat[stat.rindex(")") + 2:].split()


def _started_by(pid: int, ancestor: int) -> bool:
    """Whether `pid` descends from `ancestor`, or is a Ray process (one orphaned by a kill has lost its parent)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if b"ray" in handle.read():
                return True
    except OSError:
        return False
    while pid > 1:
        fields = _stat(pid)
        if not fields:
            return False
        pid = int(fields[1])
        if pid == ancestor:
            return True
    return False


@contextlib.contextmanager
def no_process_left_behind(seconds: float = 60):
    """Fail if a process the block started (in this session: a child, or Ray's) outlives it by `seconds`.

    Ray's processes stay in the session of the process that started them, also when a kill
    orphans them; whatever is left is killed, by PID, and named in the failure.
    """
    session, me = os.getsid(0), os.getpid()
    before = session_processes(session)
    yield

    def left() -> set[int]:
        return {pid for pid in session_processes(session) - before if _started_by(pid, me)}

    deadline = time.time() + seconds
    while (survivors := left()) and time.time() < deadline:
        time.sleep(0.5)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes {sorted(survivors)} started by the test outlived it by {seconds} s"


def _scores(test_iia: float, n_test: int = 100) -> dict[str, Any]:
    """A test IIA with per-pair correctness and an interval that agree with it."""
    ones = round(test_iia * n_test)
    return {"test_iia": test_iia, "test_iia_full_vocab": test_iia, "n_test": n_test,
            "test_correct": "1" * ones + "0" * (n_test - ones), "test_iia_ci_low": max(0.0, test_iia - 0.05),
            "test_iia_ci_high": min(1.0, test_iia + 0.05)}


_SITE = {"hypothesis": "left_boundary@L1:last:boundless", "task": "price_tagging", "causal_model": "left_boundary",
         "variables": ("left_boundary",), "layer": 1, "site": "transformer.h.1", "position": "last", "seed": 0,
         "prealign_accuracy": 1.0, "boundary_widths": {"left_boundary": 4}, "hidden_size": 64, "floor_no_op": 0.5,
         "floor_copy_source": 0.25, "seconds": 1.0}


def trial_summary(**fields: Any) -> dict[str, Any]:
    """A trained trial's summary.json data (a `TrialResult`): plausible values, `fields` over them."""
    values = {**_SITE, "component": "block", "position_label": "last", "source_position": "last",
              "intervention": "boundless", "prealign_accuracy_full_vocab": 1.0, "best_dev_iia": 0.9, "best_step": 100,
              "steps": 100, **_scores(fields.get("test_iia", 0.9)), "test_unchanged_share": 0.5, "cached": True,
              "model": {"name": "tiny"}, "train_examples_per_second": 100.0, **fields}
    return TrialResult(**values).to_dict()


def control_summary(**fields: Any) -> dict[str, Any]:
    """An untrained control's summary.json data (an `UntrainedResult`): plausible values, `fields` over them."""
    test_iia = fields.get("test_iia", 0.5)
    values = {**_SITE, "intervention": "random_rotation", "trained": False, **_scores(test_iia), "test_iia_sd": 0.0,
              "test_iia_draws": (test_iia,), "draws": 1, **fields}
    return UntrainedResult(**values).to_dict()


@contextlib.contextmanager
def tmpfs(directory: Path, options: str, why: str, lazy: bool = False) -> Iterator[Path]:
    """`directory` (made here) with a tmpfs of `options` mounted on it for the block; skips the test,
    saying `why` it needed one, where it cannot mount (root only). `lazy` unmounts with -l (a
    filled disk whose files a dying process may still hold)."""
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"{why}: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", *(["-l"] if lazy else []), str(directory)], check=True)
