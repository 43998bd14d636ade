"""`align-search share`: export a trained intervention as a Hub-style folder with a model card."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.flags import add_out
from search.outputs import check_output_folder, writing


def register(sub: Any) -> None:
    p = sub.add_parser("share", help="export a trained intervention as a Hub-style folder with a model card")
    p.add_argument("run", help="a trial folder or an intervention folder")
    add_out(p, what="the folder to write (intervention.json, intervention.safetensors, README.md)")
    p.set_defaults(handler=share)


def share(args: argparse.Namespace, announce: Callable[[str], None]) -> str:
    from alignment.sharing import export_intervention, intervention_folder

    out = Path(args.out)
    intervention_folder(args.run)  # a run that is not one fails before --out is looked at
    check_output_folder(out, "--out", args.overwrite)
    with writing(out) as folder:
        export_intervention(args.run, folder)
    return f"wrote {out} (intervention.json, intervention.safetensors, README.md): upload it as a Hub repository"
