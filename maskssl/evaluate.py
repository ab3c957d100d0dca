"""``python -m maskssl.evaluate --config=... --workdir=RUN [--step=N]``:
restore an orbax checkpoint and run the configured evaluators."""
from maskssl import main as _main


def run():
  import sys
  if not any(a.startswith("--mode") for a in sys.argv[1:]):
    sys.argv.append("--mode=evaluate")
  _main.run()


if __name__ == "__main__":
  run()
