"""The study's plain vocabulary: its config error, the names of model sources and the context
lengths of a ladder.

Nothing here imports anything: the jobs that need only these (extraction, statistics) then do not
run the validation code of :mod:`critscale.config`, and an edit there does not rerun them (each
rule reruns when a module its script imports changes, see :func:`critscale.storage.code_sha256`).
:mod:`critscale.config` re-exports all three.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config.yaml problem, with the offending key in the message."""


def model_source_name(model: str, corpus: str, exclude_first_keys: int = 0) -> str:
    """``{model}__{corpus}``, with ``__skip{k}`` when the first ``k`` keys are masked."""
    return f"{model}__{corpus}" + (f"__skip{exclude_first_keys}" if exclude_first_keys else "")


def ladder(spec, key: str = "ladder") -> list[int]:
    """The context lengths of a ladder spec (see the schema), checked to be increasing and >= 2
    (a gap statistic needs a second key, so n = 1 has none)."""
    if isinstance(spec, dict):
        if spec["min_exponent"] < 1:
            raise ConfigError(f"config key {key}.min_exponent: n = 2^{spec['min_exponent']} = 1 has no gap; allowed: min_exponent >= 1")
        if spec["min_exponent"] >= spec["max_exponent"]:
            raise ConfigError(f"config key {key}: min_exponent must be below max_exponent")
        return [2**e for e in range(spec["min_exponent"], spec["max_exponent"] + 1)]
    values = [int(v) for v in spec]
    if any(v < 2 for v in values) or sorted(set(values)) != values:
        raise ConfigError(f"config key {key}: context lengths must be >= 2 (n = 1 has no gap) and strictly increasing, got {values}")
    return values
