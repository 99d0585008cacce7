"""textrlhf: the foundations every other package builds on.

The project's packages depend on each other in one direction only (``docs/design.md`` section 2),
checked by ``tests/test_import_graph.py``::

    textrlhf  <  reward_models  <  textenv  <  agents  <  scripts  <  course

This bottom layer holds what all of them share and nothing that knows about environments, rewards or
agents: model and tokenizer loading (:mod:`textrlhf.models`), the one language-model interface
(:mod:`textrlhf.lm`: KV cache, sampling, teacher-forced log-probs; here because the annotator needs it
too), confidence intervals (:mod:`textrlhf.stats`), crash-safe files (:mod:`textrlhf.atomic`), the one
progress-bar style (:mod:`textrlhf.progress`),
and the bundled prompt sets with their loader (:mod:`textrlhf.prompts`, data in ``textrlhf/data/``).
"""

__version__ = "0.1.0"
"""The textrlhf release; ``pyproject.toml`` (``[tool.setuptools.dynamic]``) reads it from here, statically,
without importing, as the package version. ``textenv.__version__`` is the same object."""
