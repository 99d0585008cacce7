"""The command-line scripts: the pipeline, training, benchmarks, the demo (docs/index.md lists them).

Every script runs as ``python -m scripts.<name>`` or as a console script, so this file runs before any
of them imports torch: it applies the project's OpenMP defaults (:mod:`textrlhf.cpu`), which OpenMP
reads only once, when torch loads it.
"""

from textrlhf.cpu import apply_openmp_defaults

apply_openmp_defaults()
