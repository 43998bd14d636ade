"""Counterfactual pairs: the training and evaluation data of an interchange intervention.

A pair is a base input, one source input per intervened variable, and two labels computed by
the causal model: the base's own output and the counterfactual output after the interchange.
Labels come from `CausalModel.interchange` only. The 2023 code used hand-written tables of
(base region, source region) -> label instead, and one wrong row mislabelled about 8% of its
price-tagging pairs.

Two properties of the sampled set decide what IIA can mean, so both are controlled and
reported: the share of each counterfactual label (a 50/50 split makes chance 0.5) and the
share of *unchanged* pairs, whose counterfactual label equals the base label (a model that
ignores the intervention gets those right for free). A third check warns when two variables
are indistinguishable on the sampled pairs: if swapping either gives the same label on nearly
every pair, no IIA can tell the hypotheses apart.

Two *floors* say what IIA an intervention that knows nothing reaches on a pair set (`floors`):
`no_op`, the share of pairs whose counterfactual label equals the base's own answer (leave the
base alone), and `copy_source`, the share whose counterfactual label equals the source's own
answer (paste the source's answer). A pair of several variables has one source per variable;
its `copy_source` floor is that of the best single variable's source (copying always the
source of one fixed variable is a strategy an intervention could learn; choosing per pair is
not). IIA means something only above the larger floor.
"""

from __future__ import annotations

import itertools
import random
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from causal_models.causal_model import CausalModel, CausalModelError
from causal_models.errors import UserError

InputSampler = Callable[[random.Random], dict[str, Any]]
MAX_BALANCED_LABELS = 16


@dataclass(frozen=True)
class CounterfactualPair:
    """A base input, the source input of each intervened variable, the two labels, and each source's own answer."""

    base: dict[str, Any]
    sources: dict[str, dict[str, Any]]
    base_output: Any
    counterfactual_output: Any
    source_outputs: dict[str, Any]

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(self.sources)


@dataclass(frozen=True)
class PairStats:
    """What the sampler achieved, reported beside the data.

    unchanged_share: the share of pairs whose label does not change (the `no_op` floor).
    floor_copy_source: the share whose label is the source's own answer (see `floors`).
    distinct_inputs: distinct inputs (bases and sources) the pairs use.
    rejected: draws thrown away, by the rule that rejected them ("held_out": an input of
        another split; "label_quota": its label's share was full; "unchanged": the
        max_unchanged budget was spent).
    held_out, shared_inputs, reserved_inputs: set by `make_splits` for the splits after the
        first: whether no input of the split occurs in the first split, how many distinct
        inputs they share (0 when held out), and how many distinct inputs were reserved for
        the held-out splits before the first was sampled (None: the input space is large
        enough that excluding the first split's inputs sufficed).
    """

    n: int
    label_shares: dict[str, float]
    unchanged_share: float
    variable_counts: dict[str, int]
    balanced: bool
    max_unchanged: float | None
    attempts: int
    indistinguishable: list[tuple[str, str, float]]
    floor_copy_source: float = 0.0
    distinct_inputs: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    held_out: bool | None = None
    shared_inputs: int | None = None
    reserved_inputs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "indistinguishable": [list(t) for t in self.indistinguishable]}


@dataclass(frozen=True)
class PairSet:
    """Sampled pairs with the settings that made them and the shares they reached."""

    causal_model: str
    variables: tuple[str, ...]
    seed: int
    pairs: tuple[CounterfactualPair, ...]
    stats: PairStats

    def __len__(self) -> int:
        return len(self.pairs)


class SamplingError(UserError, ValueError):
    """Sampling settings out of range, or shares of labels or unchanged pairs the sampler could not produce."""


def sample_pairs(
    causal_model: CausalModel,
    variables: Sequence[str],
    n: int,
    seed: int,
    sample_inputs: InputSampler | None = None,
    *,
    balance_labels: bool = True,
    max_unchanged: float | None = None,
    per_pair: Literal["one", "all"] = "one",
    exclude: set[str] | None = None,
    max_attempts_per_pair: int = 500,
) -> PairSet:
    """Sample `n` counterfactual pairs whose labels come from `causal_model.interchange`.

    Args:
        causal_model: computes the labels.
        variables: the variables to intervene on.
        n: number of pairs (> 0).
        seed: seeds a private `random.Random`; the same seed gives the same pairs.
        sample_inputs: `f(rng) -> inputs`; defaults to the causal model's own sampler.
        balance_labels: give each counterfactual label an equal share, per variable
            (50/50 for a boolean output). Ignored, and reported so, for outputs with more
            than 16 values or no finite domain.
        max_unchanged: at most this share of pairs may have counterfactual == base output.
        per_pair: "one" intervenes on one variable per pair, cycling through `variables`
            (the 2023 Left-and-Right model); "all" intervenes on every variable at once,
            each with its own source.
        exclude: input keys (`input_key(inputs)`) no base or source may have: held-out
            pairs whose inputs never occur in training.
        max_attempts_per_pair: give up (SamplingError) after n * this many draws.
    """
    sampler = _check_arguments(causal_model, variables, n, sample_inputs, max_unchanged, per_pair)
    rng = random.Random(seed)
    groups = [tuple(variables)] if per_pair == "all" else [(v,) for v in variables]
    label_values = _balanced_label_values(causal_model) if balance_labels else None
    tally = _Tally(_quotas(n, len(groups), label_values), label_values is not None,
                   n if max_unchanged is None else int(max_unchanged * n), exclude or set())
    pairs: list[CounterfactualPair] = []
    attempts = 0
    for slot in itertools.cycle(range(len(groups))):
        if len(pairs) == n:
            break
        if _slot_filled(slot, tally.quotas, tally.counts):
            continue
        attempts += 1
        if attempts > n * max_attempts_per_pair:
            failure = _Failure(causal_model.name, n, len(pairs), attempts - 1, len(tally.seen), tally.rejected,
                               _missing(tally.counts, tally.quotas), max_unchanged, len(tally.exclude))
            raise SamplingError(failure.explain())
        pair = _draw(causal_model, groups[slot], sampler, rng)
        if tally.admit(slot, pair):
            pairs.append(pair)
    rng.shuffle(pairs)
    stats = _stats(causal_model, variables, pairs, label_values is not None, max_unchanged, attempts,
                   tally.rejected)
    return PairSet(causal_model.name, tuple(variables), seed, tuple(pairs), stats)


@dataclass
class _Tally:
    """The pairs sampling has accepted against its quotas, the inputs it has seen, and what it rejected, why."""

    quotas: dict[tuple[int, Any], int]
    by_label: bool  # quotas are per (variable group, counterfactual label), else per group
    unchanged_budget: int
    exclude: set[str]
    counts: Counter[tuple[int, Any]] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    seen: set[str] = field(default_factory=set)
    unchanged: int = 0

    def admit(self, slot: int, pair: CounterfactualPair) -> bool:
        """Count `pair` for variable group `slot` if it is held out of nothing and fits its quotas."""
        keys = [input_key(x) for x in (pair.base, *pair.sources.values())]
        self.seen.update(keys)
        key = (slot, pair.counterfactual_output if self.by_label else None)
        is_unchanged = pair.counterfactual_output == pair.base_output
        reason = ("held_out" if self.exclude and any(k in self.exclude for k in keys) else
                  "label_quota" if self.counts[key] >= self.quotas.get(key, 0) else
                  "unchanged" if is_unchanged and self.unchanged >= self.unchanged_budget else None)
        if reason is not None:
            self.rejected[reason] += 1
            return False
        self.counts[key] += 1
        self.unchanged += is_unchanged
        return True


def _slot_filled(slot: int, quotas: dict[tuple[int, Any], int],
                 counts: Counter[tuple[int, Any]]) -> bool:
    """Whether variable group `slot` has all the pairs its label quotas ask for."""
    return sum(v for (g, _), v in quotas.items() if g == slot) == sum(v for (g, _), v in counts.items() if g == slot)


def input_key(inputs: dict[str, Any]) -> str:
    """A hashable, order-independent key of an input assignment."""
    return repr(sorted(inputs.items()))


def used_inputs(pair_set: PairSet) -> set[str]:
    """Keys of every base and source input in `pair_set`."""
    return _used(pair_set.pairs)


def _used(pairs: Sequence[CounterfactualPair]) -> set[str]:
    return {input_key(x) for p in pairs for x in (p.base, *p.sources.values())}


def floors(labels: Sequence[Any], base_labels: Sequence[Any],
           source_labels: Sequence[Sequence[Any]]) -> dict[str, float]:
    """The IIA of two interventions that know nothing: leave the base alone, or paste a source's answer.

    Args:
        labels: each pair's counterfactual label.
        base_labels: each pair's base answer.
        source_labels: each pair's sources' own answers, in the pair's variable order.
    Returns:
        {"no_op": share of labels equal to the base answer, "copy_source": the largest share,
        over source slots j, of labels equal to the answer of source j} (see the module docstring).
    """
    n = len(labels)
    if n == 0:
        return {"no_op": 0.0, "copy_source": 0.0}
    no_op = sum(label == base for label, base in zip(labels, base_labels)) / n
    slots = max((len(sources) for sources in source_labels), default=0)
    copy = max((sum(len(sources) > j and label == sources[j] for label, sources in zip(labels, source_labels)) / n
                for j in range(slots)), default=0.0)
    return {"no_op": round(no_op, 4), "copy_source": round(copy, 4)}


def indistinguishable_variables(
    causal_model: CausalModel, pairs: Sequence[CounterfactualPair], variables: Sequence[str],
    threshold: float = 0.95,
) -> list[tuple[str, str, float]]:
    """Pairs (a, b) where swapping b instead of a gives the same label on more than `threshold` of pairs.

    Each intervened variable a is compared with every other non-output variable b of the
    model that is not one of its ancestors (a copy of an input is trivially the same), using
    the pair's own base and a's source.
    """
    others = [v.name for v in causal_model.variables if v.name != causal_model.output]
    found = []
    for a in variables:
        with_a = [p for p in pairs if a in p.sources]
        skip = causal_model.ancestors(a) | {a}
        for b in others:
            if b in skip or not with_a:
                continue
            same = sum(
                causal_model.interchange(p.base, {b: p.sources[a]})[causal_model.output] == p.counterfactual_output
                for p in with_a
            )
            share = same / len(with_a)
            if share > threshold:
                found.append((a, b, round(share, 4)))
    return found


def _check_arguments(causal_model: CausalModel, variables: Sequence[str], n: int,
                     sample_inputs: InputSampler | None, max_unchanged: float | None,
                     per_pair: str) -> InputSampler:
    if not variables:
        raise CausalModelError(f"variables must name at least one of {list(causal_model.intermediate_names)}")
    for name in variables:
        causal_model.variable(name)
    if len(set(variables)) != len(variables):
        raise CausalModelError(f"variables must be distinct, got {list(variables)}")
    if not isinstance(n, int) or n <= 0:
        raise SamplingError(f"n must be a positive integer, got {n!r}")
    if max_unchanged is not None and not 0.0 <= max_unchanged <= 1.0:
        raise SamplingError(f"max_unchanged must be in [0, 1], got {max_unchanged!r}")
    if per_pair not in ("one", "all"):
        raise SamplingError(f"per_pair must be 'one' or 'all', got {per_pair!r}")
    sampler = sample_inputs or causal_model.sample_inputs
    if sampler is None:
        raise SamplingError(f"causal model {causal_model.name!r} has no input sampler; pass sample_inputs")
    return sampler


def _balanced_label_values(causal_model: CausalModel) -> tuple[Any, ...] | None:
    values = causal_model.variable(causal_model.output).values
    if values is None or len(values) > MAX_BALANCED_LABELS:
        return None
    return tuple(values)


def _quotas(n: int, n_groups: int, label_values: tuple[Any, ...] | None) -> dict[tuple[int, Any], int]:
    labels = label_values if label_values is not None else (None,)
    cells = [(g, label) for g in range(n_groups) for label in labels]
    quotas = {cell: n // len(cells) for cell in cells}
    for cell in cells[: n % len(cells)]:
        quotas[cell] += 1
    return quotas


def _draw(causal_model: CausalModel, group: tuple[str, ...], sampler: InputSampler,
          rng: random.Random) -> CounterfactualPair:
    base = sampler(rng)
    sources = {variable: sampler(rng) for variable in group}
    output = causal_model.output
    counterfactual = causal_model.interchange(base, sources)[output]
    source_outputs = {variable: causal_model.run(source)[output] for variable, source in sources.items()}
    return CounterfactualPair(base, sources, causal_model.run(base)[output], counterfactual, source_outputs)


def _stats(causal_model: CausalModel, variables: Sequence[str], pairs: list[CounterfactualPair],
           balanced: bool, max_unchanged: float | None, attempts: int, rejected: Counter[str]) -> PairStats:
    n = len(pairs)
    labels = Counter(str(p.counterfactual_output) for p in pairs)
    indistinguishable = indistinguishable_variables(causal_model, pairs[:2000], variables)
    for a, b, share in indistinguishable:
        warnings.warn(
            f"variables {a!r} and {b!r} of causal model {causal_model.name!r} give the same counterfactual "
            f"label on {share:.1%} of the sampled pairs: IIA cannot tell them apart on this data",
            stacklevel=3,
        )
    return PairStats(
        n=n,
        label_shares={k: round(v / n, 4) for k, v in sorted(labels.items())},
        unchanged_share=round(sum(p.counterfactual_output == p.base_output for p in pairs) / n, 4),
        variable_counts=dict(Counter(v for p in pairs for v in p.variables)),
        balanced=balanced,
        max_unchanged=max_unchanged,
        attempts=attempts,
        indistinguishable=indistinguishable,
        floor_copy_source=floors([p.counterfactual_output for p in pairs], [p.base_output for p in pairs],
                                 [[p.source_outputs[v] for v in p.variables] for p in pairs])["copy_source"],
        distinct_inputs=len(_used(pairs)),
        rejected=dict(rejected),
    )


def _missing(counts: Counter[tuple[int, Any]], quotas: dict[tuple[int, Any], int]) -> dict[str, int]:
    """Pairs still missing per (variable group, label) cell."""
    return {f"{g}:{label}": quotas[(g, label)] - counts[(g, label)]
            for (g, label) in quotas if counts[(g, label)] < quotas[(g, label)]}


@dataclass(frozen=True)
class _Failure:
    """Why sampling gave up, in numbers; `explain` names the limit that was hit and the knob that moves it."""

    causal_model: str
    n: int
    got: int
    draws: int
    distinct: int
    rejected: Counter[str]
    missing: dict[str, int]
    max_unchanged: float | None
    excluded: int

    def explain(self) -> str:
        head = (f"could not sample {self.n} pairs for causal model {self.causal_model!r}: got {self.got} after "
                f"{self.draws} draws, which held {self.distinct} distinct inputs; ")
        limit = max(("held_out", "label_quota", "unchanged"), key=lambda reason: self.rejected[reason])
        share = self.rejected[limit] / max(1, self.draws)
        if limit == "held_out":
            return head + (f"{share:.0%} of draws used one of the {self.excluded} inputs held out for another split "
                           f"(the held-out exclusion: dev and test pairs never reuse a training input). The input "
                           f"space is too small for these sizes: lower data.n_train, data.n_dev or data.n_test")
        if limit == "unchanged":
            return head + (f"{share:.0%} of draws were unchanged pairs (label equal to the base answer) beyond "
                           f"max_unchanged={self.max_unchanged}. Loosen max_unchanged (data.max_unchanged)")
        return head + (f"still missing (variable group:label -> count) {self.missing}: those labels are too rare "
                       f"among the draws to fill an equal share each (the balance). Set balance_labels=False "
                       f"(data.balance_labels=false) or loosen max_unchanged (now {self.max_unchanged})")
