"""Results: what a benchmark's numbers mean and what verdicts follow from them.

Metrics and their units, the reader of saved pytest-benchmark JSON, comparison, SLO budgets and
regression gates. Pure Python over saved data: this layer imports nothing else of the package, so
it reads a baseline without loading the native runtime.
"""
