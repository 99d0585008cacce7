"""The command-line scripts: the pipeline, training, benchmarks, the demo (docs/index.md lists them).

Every script runs as ``python -m scripts.<name>`` or as a console script, so this file runs before any
of them imports torch: it applies the project's CPU defaults (:mod:`textrlhf.cpu`): OpenMP's, which OpenMP
reads only once, when torch loads it, and glibc malloc's.
"""

from textrlhf.cpu import apply_malloc_defaults, apply_openmp_defaults

apply_openmp_defaults()
apply_malloc_defaults()
