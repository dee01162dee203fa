"""The adapter benchmark (stoix/benchmarks/adapters.py) runs and reports positive rates."""

from stoix.benchmarks.adapters import TASKS, measure
from stoix.wrappers.factory import SUITES


def test_adapter_benchmark_measures_gymnax_at_tiny_sizes():
    rates = measure("gymnax", num_envs=2, length=4, repeats=1)
    assert rates["native"] > 0 and rates["stoix"] > 0
    assert rates["cost"] == 1.0 - rates["stoix"] / rates["native"]
    assert set(TASKS) == set(SUITES)
