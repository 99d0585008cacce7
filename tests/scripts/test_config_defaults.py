"""One default per concept (issue 14): the library owns each config; scripts and the pipeline follow it.

Every field of a script or pipeline config whose name is a field of a library config of the same
concept (:class:`reward_models.config.RewardModelConfig`, :class:`reward_models.config.RewardTrainingConfig`,
:class:`agents.kl.KLConfig`) must default to the library's value, unless the module names it in its
``LIBRARY_OVERRIDES`` with a reason; and every named override must really differ, so the list cannot go
stale. The agents' constructors take their KL defaults from :class:`agents.kl.KLConfig` too.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path

import pytest

from agents.buffers import KLRolloutBuffer, MaskableKLRolloutBuffer
from agents.kl import AdaptiveKLController, KLConfig, kl_estimate, shape_rewards
from agents.registry import KL_OPTIONS
from agents.rlhf_ppo import RLHFPPO
from reward_models.config import RewardModelConfig, RewardTrainingConfig
from scripts import benchmark, compare_agents, train_agent, train_reward_model
from scripts.stages import config_sections as pipeline
from scripts.stages.config import build_config, load_yaml

RM_CONFIGS = (RewardModelConfig, RewardTrainingConfig)

# Library fields whose name a script uses for another concept: RewardModelConfig.batch_size is the
# scoring batch (64 pairs per forward), while the scripts' batch_size is the optimiser's
# (RewardTrainingConfig.batch_size, pairs per step).
OTHER_CONCEPT = {(RewardModelConfig, "batch_size")}

# (name, script / pipeline config, its library configs, its named overrides {field: reason})
CASES = [
    (
        "pipeline reward_model",
        pipeline.RewardModelStageConfig,
        RM_CONFIGS,
        {f: why for (section, f), why in pipeline.LIBRARY_OVERRIDES.items() if section == "reward_model"},
    ),
    (
        "pipeline rl",
        pipeline.RLConfig,
        (KLConfig,),
        {f: why for (section, f), why in pipeline.LIBRARY_OVERRIDES.items() if section == "rl"},
    ),
    ("scripts.train_reward_model", train_reward_model.Config, RM_CONFIGS, train_reward_model.LIBRARY_OVERRIDES),
    ("scripts.train_agent", train_agent.Config, (KLConfig,), {}),
    ("scripts.compare_agents", compare_agents.Config, (KLConfig,), compare_agents.LIBRARY_OVERRIDES),
    ("scripts.benchmark", benchmark.Config, (KLConfig,), {}),
]
IDS = [case[0] for case in CASES]


def default(f: dataclasses.Field):
    """A dataclass field's default value (a fresh one for ``default_factory`` fields)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    assert f.default_factory is not dataclasses.MISSING, f"{f.name} has no default"
    return f.default_factory()


def shared_fields(cls, libraries) -> list[tuple[str, object, type, object]]:
    """``(field, its default, library config, the library's default)`` for every same-concept field."""
    lib_fields = {(lib, f.name): default(f) for lib in libraries for f in dataclasses.fields(lib)}
    return [
        (f.name, default(f), lib, lib_fields[lib, f.name])
        for f in dataclasses.fields(cls)
        for lib in libraries
        if (lib, f.name) in lib_fields and (lib, f.name) not in OTHER_CONCEPT
    ]


def test_the_cases_cover_the_concepts():
    # A case that shares no field with its library would check nothing (a renamed field, say).
    for name, cls, libraries, _ in CASES:
        assert shared_fields(cls, libraries), f"{name} shares no field with {[lib.__name__ for lib in libraries]}"
    # The pipeline's mapping names only the sections this test reads.
    assert {section for section, _ in pipeline.LIBRARY_OVERRIDES} <= {"reward_model", "rl"}


@pytest.mark.parametrize(("name", "cls", "libraries", "overrides"), CASES, ids=IDS)
def test_defaults_are_the_library_s_unless_named_overrides(name, cls, libraries, overrides):
    drifted = [
        f"{field} = {value!r} but {lib.__name__}.{field} = {lib_value!r}"
        for field, value, lib, lib_value in shared_fields(cls, libraries)
        if field not in overrides and value != lib_value
    ]
    assert not drifted, (
        f"{name}: defaults that drifted from the library: {drifted}; take the library's "
        f"(`= {libraries[0].__name__}.<field>`) or name the override and its reason in "
        f"LIBRARY_OVERRIDES"
    )


@pytest.mark.parametrize(("name", "cls", "libraries", "overrides"), CASES, ids=IDS)
def test_every_named_override_differs_from_the_library(name, cls, libraries, overrides):
    shared: dict[str, list[tuple[object, object]]] = {}
    for field, value, _, lib_value in shared_fields(cls, libraries):
        shared.setdefault(field, []).append((value, lib_value))
    for field, reason in overrides.items():
        assert field in shared, f"{name}: override {field!r} is not a field shared with the library"
        assert all(value != lib_value for value, lib_value in shared[field]), (
            f"{name}: override {field!r} equals the library's default {shared[field]}: drop it from LIBRARY_OVERRIDES"
        )
        assert isinstance(reason, str) and len(reason.split()) >= 5, f"{name}: override {field!r} needs its reason"


def test_the_pipeline_keeps_its_measured_rl_kl_defaults():
    # docs/results/2026-11-22-pipeline-default-run.md was measured with these: they stay, as named overrides.
    assert pipeline.RLConfig.kl_coef == 0.2 and pipeline.RLConfig.kl_horizon == 128.0
    assert {("rl", "kl_coef"), ("rl", "kl_horizon")} <= set(pipeline.LIBRARY_OVERRIDES)


def test_the_reward_model_max_length_is_one_value():
    values = {
        RewardModelConfig.max_length,
        pipeline.RewardModelStageConfig.max_length,
        train_reward_model.Config.max_length,
    }
    assert values == {RewardModelConfig.max_length}, values


def test_the_agents_take_their_kl_defaults_from_klconfig():
    expected = {f.name: default(f) for f in dataclasses.fields(KLConfig)}
    for fn in (RLHFPPO.__init__, KLRolloutBuffer.__init__, MaskableKLRolloutBuffer.__init__):
        params = inspect.signature(fn).parameters
        got = {name: params[name].default for name in expected if name in params}
        assert got == expected, f"{fn.__qualname__}: {got} != KLConfig's {expected}"
    controller = inspect.signature(AdaptiveKLController.__init__).parameters
    assert (controller["target"].default, controller["horizon"].default) == (KLConfig.kl_target, KLConfig.kl_horizon)
    assert inspect.signature(kl_estimate).parameters["kind"].default == KLConfig.kl_estimator
    shaping = inspect.signature(shape_rewards).parameters
    assert (shaping["kind"].default, shaping["mode"].default) == (KLConfig.kl_estimator, KLConfig.kl_mode)


def test_make_agent_s_kl_options_are_the_klconfig_fields():
    assert tuple(KL_OPTIONS) == tuple(f.name for f in dataclasses.fields(KLConfig))


@pytest.mark.parametrize(
    "bad",
    [
        {"kl_coef": -0.1},
        {"kl_coef": math.inf},
        {"kl_estimator": "k4"},
        {"kl_mode": "sequence"},
        {"kl_target": 0.0},
        {"kl_horizon": -1.0},
        {"kl_horizon": math.nan},
    ],
)
def test_klconfig_rejects_bad_values_naming_them(bad):
    ((key, value),) = bad.items()
    with pytest.raises(ValueError, match=key):
        KLConfig(**bad)


def test_the_example_pipeline_config_shows_the_defaults():
    """configs/pipeline.yaml says its values are the defaults: a changed default must change it too."""
    shown = load_yaml(Path(__file__).parents[2] / "configs" / "pipeline.yaml")
    defaults = build_config()
    stale = {
        f"{section}.{key}": (value, getattr(getattr(defaults, section), key))
        for section, keys in shown.items()
        for key, value in keys.items()
        if (section, key) != ("run", "run_dir") and getattr(getattr(defaults, section), key) != value
    }
    assert not stale, f"configs/pipeline.yaml (shown, default): {stale}"
