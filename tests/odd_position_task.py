"""The planted task with a named position no tokenizer can place (importable as file.py:ODD).

Its template starts with a space and names that space as the position `indent`. A
word-level tokenizer drops spaces, so no token covers that character and none comes before
it: the position cannot be located in any prompt, which align-search must say up front.
"""

from dataclasses import replace

from causal_models import FieldChar, PromptTemplate
from tests.planted_task import planted_task

_PLANTED = planted_task()
_PLAIN = _PLANTED.template("plain")
INDENTED = PromptTemplate("indented", "{pad}{f0} {f1} {f2} {key} =",
                          lambda x: {"pad": " ", **{k: x[k] for k in ("key", "f0", "f1", "f2")}},
                          {"indent": FieldChar("pad"), "key": FieldChar("key")}, _PLAIN.answers)
ODD = replace(_PLANTED, name="odd", templates={"indented": INDENTED}, default_template="indented")
