"""Integrations: where users meet the package.

The pytest plugin and its ``agent_benchmark`` fixture, and the IPython magics. The top layer: it may
import any layer below it, and nothing in the package imports it.
"""
