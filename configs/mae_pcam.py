r"""Plain MAE on PatchCamelyon: ``configs/sdmae_pcam.py`` with
``sdmae.sd_weight = 0`` (one code path; the two distillation heads are then
neither created nor run). Same variants (``quick``, ``sample``, ``p8``,
``tiny``, ``base``), same recipe otherwise (Luo et al., arXiv 2203.16983),
including the ``evals.finetune`` block: MAE's fine-tune recipe by default,
``--config.evals.finetune.augment=none --config.evals.finetune.two_class=False``
for plain fine-tuning (fields documented in configs/sdmae_pcam.py).

Commands:
  python -m maskssl.main --config=configs/mae_pcam.py:quick --workdir=runs/mae_quick
  python -m maskssl.main --config=configs/mae_pcam.py:sample --workdir=runs/mae_sample
  python -m maskssl.main --config=configs/mae_pcam.py --workdir=runs/mae_pcam

Measured: see configs/sdmae_pcam.py and benchmarks/sdmae_throughput.py;
reproduction: benchmarks/reproduce_images.py --task=pcam.
"""
import importlib.util
import os


def _sdmae_config():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "sdmae_pcam.py")
  spec = importlib.util.spec_from_file_location("_sdmae_pcam_config", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def get_config(arg=None):
  c = _sdmae_config().get_config(arg)
  c.sdmae.sd_weight = 0.0
  return c
