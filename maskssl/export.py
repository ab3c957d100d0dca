"""Export a trained encoder with PyTorch names and layouts::

    python -m maskssl.export --workdir=RUN [--step=N] \\
        --target=timm|torchvision|official --out=FILE.safetensors

Targets by method: SD-MAE / MAE ViT -> ``timm`` (``vit_*_patch*`` names) or
``official``; MetaMask / MSCN ResNet -> ``torchvision`` (``resnet18`` /
``resnet50`` names) or ``official`` (lightly); SMA -> ``official``. The
tensors are written with safetensors' numpy API (no torch needed); a JSON
sidecar ``FILE.json`` holds the run config, the checkpoint step, the input
normalisation, the feature dimension and the converter's notes. Load in
PyTorch with ``safetensors.torch.load_file(FILE)`` and
``model.load_state_dict(..., strict=False)`` (see the sidecar's notes).
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.",
                               required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default newest).")
_TARGET = flags.DEFINE_string("target", None,
                              "timm | torchvision | official", required=True)
_OUT = flags.DEFINE_string("out", None, "Output .safetensors (or .npz).",
                           required=True)
_CONFIG = flags.DEFINE_string(
    "config", None, "Config file[:variant] (default: the run's config.json).")


def export(workdir: str, target: str, out: str, step: int | None = None,
           config=None) -> dict:
  """Write ``out`` and ``out``'s JSON sidecar; returns the sidecar dict."""
  from maskssl import api, interop
  enc = api.load(workdir, step=step, config=config)
  module = interop.exporter(enc.config.method)
  tensors, info = module.export(enc.method, enc.state, target)
  # the converter's info first: the run's own fields below take precedence
  sidecar = dict(
      info, format="maskssl-export/1", target=target,
      method=enc.config.method, step=enc.step,
      workdir=os.path.abspath(workdir),
      tensors={k: [list(v.shape), str(v.dtype)] for k, v in tensors.items()},
      config=json.loads(enc.config.to_json_best_effort()))
  interop.save_state_dict(out, tensors, metadata=dict(
      target=target, method=enc.config.method, step=str(enc.step)))
  with open(os.path.splitext(out)[0] + ".json", "w") as f:
    json.dump(sidecar, f, indent=2, default=str)
  return sidecar


def main(argv):
  del argv
  from maskssl import run as run_lib
  try:
    side = export(_WORKDIR.value, _TARGET.value, _OUT.value, _STEP.value,
                  _CONFIG.value)
  except run_lib.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  n = sum(1 for _ in side["tensors"])
  print(f"wrote {_OUT.value} ({n} tensors, target {side['target']}, "
        f"step {side['step']}) and {os.path.splitext(_OUT.value)[0]}.json")


if __name__ == "__main__":
  app.run(main)
