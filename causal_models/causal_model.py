"""Symbolic causal models: the hypotheses a network is tested against.

A causal model is a small directed acyclic graph of named variables. Input variables take
their values from outside; every other variable has a mechanism, a plain Python function of
its parents' values. `run` computes every variable from the inputs. `interchange` is the
symbolic half of an interchange intervention: it sets some variables to the values they take
on *source* inputs, keeps everything else from the *base* inputs, and recomputes the
descendants. The output variable's counterfactual value is the label an aligned network must
produce when the same swap is done on its hidden states (Geiger et al. 2021, "Causal
Abstractions of Neural Networks"; Wu et al. 2023, "Interpretability at Scale").

This module is pure Python on purpose: the counterfactual labels must never depend on the
network side, and the package never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from causal_models.errors import UserError

Values = Mapping[str, Any]


class CausalModelError(UserError, ValueError):
    """A causal model is badly defined, or was given inputs it cannot take."""


@dataclass(frozen=True)
class Variable:
    """One node of a causal model.

    Args:
        name: a Python-identifier-like name, unique in its model.
        values: the domain (any collection supporting `in`, e.g. `(True, False)` or
            `range(1, 1000)`); None leaves the variable unconstrained.
        parents: names of the variables its mechanism reads, in argument order.
        mechanism: `f(*parent_values) -> value`; None marks an input variable.
    """

    name: str
    values: Collection[Any] | None = None
    parents: tuple[str, ...] = ()
    mechanism: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "a").isalnum():
            raise CausalModelError(f"variable name must be letters, digits and '_', got {self.name!r}")
        if self.mechanism is None and self.parents:
            raise CausalModelError(f"input variable {self.name!r} must have no parents, got {self.parents}")
        if self.mechanism is not None and not callable(self.mechanism):
            raise CausalModelError(f"mechanism of {self.name!r} must be callable, got {self.mechanism!r}")

    @property
    def is_input(self) -> bool:
        return self.mechanism is None


@dataclass(frozen=True)
class CausalModel:
    """A named DAG of variables with one output variable.

    Args:
        name: registry name, e.g. "left_boundary".
        variables: every variable, inputs included, in any order.
        output: the variable whose value is the task's answer.
        default_variables: the intermediate variables a hypothesis aligns when the user names
            none (Left Boundary aligns `left_boundary`, the two-boundary model both).
        description: one line for `align-search tasks`.
        sample_inputs: optional input sampler `f(rng) -> inputs`; it replaces the task's own
            when this causal model needs another input distribution (a fixed bracket, say).
    """

    name: str
    variables: Sequence[Variable]
    output: str
    default_variables: tuple[str, ...] = ()
    description: str = ""
    sample_inputs: Callable[[Any], dict[str, Any]] | None = None
    _by_name: dict[str, Variable] = field(init=False, repr=False, compare=False)
    _order: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Variable] = {}
        for variable in self.variables:
            if variable.name in by_name:
                raise CausalModelError(f"causal model {self.name!r} defines variable {variable.name!r} twice")
            by_name[variable.name] = variable
        object.__setattr__(self, "_by_name", by_name)
        for variable in self.variables:
            for parent in variable.parents:
                if parent not in by_name:
                    raise CausalModelError(
                        f"variable {variable.name!r} has unknown parent {parent!r}; "
                        f"variables of {self.name!r}: {sorted(by_name)}"
                    )
        object.__setattr__(self, "_order", _topological_order(self.name, by_name))
        if self.output not in by_name or by_name[self.output].is_input:
            raise CausalModelError(f"output of {self.name!r} must be a non-input variable, got {self.output!r}")
        for name in self.default_variables:
            self.variable(name)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables if v.is_input)

    @property
    def intermediate_names(self) -> tuple[str, ...]:
        """Variables that can be aligned: neither inputs nor the output, in topological order."""
        return tuple(n for n in self._order if not self._by_name[n].is_input and n != self.output)

    def variable(self, name: str) -> Variable:
        if name not in self._by_name:
            raise CausalModelError(
                f"variable must be one of {sorted(self._by_name)} of causal model {self.name!r}, got {name!r}"
            )
        return self._by_name[name]

    def ancestors(self, name: str) -> set[str]:
        """Every variable `name` depends on, directly or not."""
        found: set[str] = set()
        stack = list(self.variable(name).parents)
        while stack:
            parent = stack.pop()
            if parent not in found:
                found.add(parent)
                stack.extend(self._by_name[parent].parents)
        return found

    def run(self, inputs: Values, fixed: Values | None = None) -> dict[str, Any]:
        """Compute every variable's value from `inputs`, holding the variables in `fixed` at the given values.

        Raises CausalModelError naming the variable when an input is missing, unknown or
        outside its domain, or when a mechanism raises or returns a value outside its domain.
        """
        fixed = dict(fixed or {})
        self._check_inputs(inputs)
        values: dict[str, Any] = {}
        for name in self._order:
            variable = self._by_name[name]
            if name in fixed:
                values[name] = fixed[name]
            elif variable.is_input:
                values[name] = inputs[name]
            else:
                values[name] = self._compute(variable, values)
        return values

    def interchange(self, base_inputs: Values, sources: Mapping[str, Values]) -> dict[str, Any]:
        """Counterfactual values: each variable in `sources` takes its value under its source inputs.

        Args:
            base_inputs: the inputs of the base example.
            sources: variable name -> the source inputs that variable's value comes from.
        Returns:
            every variable's value after the interchange; the output is the counterfactual label.
        """
        fixed = {}
        for name, source_inputs in sources.items():
            self.variable(name)
            fixed[name] = self.run(source_inputs)[name]
        return self.run(base_inputs, fixed)

    def _check_inputs(self, inputs: Values) -> None:
        missing = [n for n in self.input_names if n not in inputs]
        unknown = [n for n in inputs if n not in self._by_name or not self._by_name[n].is_input]
        if missing or unknown:
            raise CausalModelError(
                f"inputs of {self.name!r} must be exactly {list(self.input_names)}, "
                f"got missing {missing} and unknown {unknown}"
            )
        for name in self.input_names:
            _check_domain(self._by_name[name], inputs[name], "input")

    def _compute(self, variable: Variable, values: dict[str, Any]) -> Any:
        mechanism = variable.mechanism
        if mechanism is None:  # pragma: no cover - run() never computes an input
            raise RuntimeError(f"input {variable.name!r} has no mechanism")
        arguments = [values[p] for p in variable.parents]
        try:
            value = mechanism(*arguments)
        except Exception as error:
            raise CausalModelError(
                f"mechanism of variable {variable.name!r} raised {type(error).__name__}: {error} "
                f"(parents {dict(zip(variable.parents, arguments))})"
            ) from error
        _check_domain(variable, value, "mechanism value")
        return value


def _check_domain(variable: Variable, value: Any, what: str) -> None:
    if variable.values is not None and value not in variable.values:
        shown = variable.values if len(variable.values) <= 12 else f"{type(variable.values).__name__} {variable.values}"
        raise CausalModelError(f"{what} of variable {variable.name!r} must be in {shown}, got {value!r}")


def _topological_order(model_name: str, by_name: dict[str, Variable]) -> tuple[str, ...]:
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            cycle = path[path.index(name):] + [name]
            raise CausalModelError(f"causal model {model_name!r} has a cycle: {' -> '.join(cycle)}")
        state[name] = "active"
        for parent in by_name[name].parents:
            visit(parent, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in by_name:
        visit(name, [])
    return tuple(order)
