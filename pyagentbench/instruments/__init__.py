"""Instruments: clocks, the native timing loop, resource sampling and allocation counts.

Facades over ``pyagentbench._native`` (Timer, measure()/Measurement, Sampler, peak RSS,
AllocCounter) and the observation of one target that combines them. Imports only the native module
and :mod:`pyagentbench.results` (for units).

(Not named ``measure``: a subpackage of that name would shadow the public ``pyagentbench.measure()``
as soon as it was imported.)
"""
