"""Deprecated name: ``python benchmarks/reproduce_sma.py --domain=particle``.

Same runs (``~/maskssl_runs/reproduce_sma_higgs``) and result files
(``benchmarks/results/reproduce_sma_higgs_n{100,1000}.json``).
"""
import os
import runpy
import sys

if __name__ == "__main__":
  sys.argv = [sys.argv[0], "--domain=particle", *sys.argv[1:]]
  runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "reproduce_sma.py"), run_name="__main__")
