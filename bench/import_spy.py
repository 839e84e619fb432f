"""Probe preamble shared by the benches: run first in the Airflow env, it records in ``tried``
every attempt to import TensorFlow (or Keras / Model Garden), whether or not it is installed."""

SPY = r"""
import importlib.abc, json, sys, time
tried = []
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "official"):
            tried.append(name)
        return None
sys.meta_path.insert(0, Spy())
"""
