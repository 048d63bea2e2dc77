"""cqbnet's benchmarks: paper reproductions, speed and quality benchmarks, diagnostics, each run from the repository
root as ``python -m benchmarks.<name>`` (shared helpers: :mod:`benchmarks.recipe_arms`, :mod:`benchmarks.machine`,
:mod:`benchmarks.commit_results`). Results go to ``benchmarks/results/``, one current report each beside the
script; superseded reports live in ``benchmarks/archive/``."""
