"""A task whose variable is planted through the input, for end-to-end tests (importable as file.py:PLANTED).

The answer is whether the *key* word belongs to a set; the three filler words before it carry
nothing. A model that solves it must carry `in_set` at the last position, and cannot carry it
at a filler's position at any layer, since attention is causal and the fillers come first.
"""

from causal_models import CausalModel, FieldChar, PromptTemplate, Task, Variable

KEYS = ("red", "blue", "green", "pink", "gray", "gold", "teal", "navy")
FILLERS = ("cat", "dog", "cow", "pig", "hen", "fox")


def planted_task() -> Task:
    model = CausalModel("planted", [
        Variable("key", KEYS), *(Variable(f"f{i}", FILLERS) for i in range(3)),
        Variable("in_set", (True, False), ("key",), lambda key: key in KEYS[:4]),
        Variable("answer", (True, False), ("in_set",), lambda value: value),
    ], output="answer", default_variables=("in_set",))
    control = CausalModel("key_low", [
        Variable("key", KEYS), *(Variable(f"f{i}", FILLERS) for i in range(3)),
        Variable("key_low", (True, False), ("key",), lambda key: key in KEYS[:2]),
        Variable("key_mid", (True, False), ("key",), lambda key: key in KEYS[2:4]),
        Variable("answer", (True, False), ("key_low", "key_mid"), lambda low, mid: low or mid),
    ], output="answer", default_variables=("key_low",), description="control: half of the set only")
    template = PromptTemplate("plain", "{f0} {f1} {f2} {key} =",
                              lambda x: {k: x[k] for k in ("key", "f0", "f1", "f2")},
                              {"key": FieldChar("key"), "filler": FieldChar("f1")}, {True: "yes", False: "no"})
    return Task("planted", "is the key in the set", lambda rng: {"key": rng.choice(KEYS), **{
        f"f{i}": rng.choice(FILLERS) for i in range(3)}}, {"planted": model, "key_low": control},
        {"plain": template}, "planted", "plain", controls=("key_low",))


PLANTED = planted_task()
