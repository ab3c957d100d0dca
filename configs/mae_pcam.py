r"""Plain MAE on PatchCamelyon: ``configs/sdmae_pcam.py`` with
``sdmae.sd_weight = 0`` (one code path; the two distillation heads are then
neither created nor run). Same variants (``quick``, ``sample``, ``p8``,
``tiny``, ``base``, ``reference``, ``cpu``), same recipe otherwise (Luo et
al., arXiv 2203.16983), including the ``evals.finetune`` block: MAE's
fine-tune recipe by default,
``--config.evals.finetune.augment=none --config.evals.finetune.two_class=False``
for plain fine-tuning (fields documented in configs/sdmae_pcam.py).

Commands:
  python -m maskssl.main --config=configs/mae_pcam.py:quick --workdir=runs/mae_quick
  python -m maskssl.main --config=configs/mae_pcam.py:sample --workdir=runs/mae_sample
  python -m maskssl.main --config=configs/mae_pcam.py --workdir=runs/mae_pcam
  python benchmarks/reproduce_images.py --task=pcam   # random init, MAE, SD-MAE

Measured: configs/sdmae_pcam.py, benchmarks/sdmae_throughput.py and
benchmarks/results/config_history.md.
"""
from maskssl.config_utils import load_sibling


def get_config(arg=None):
  c = load_sibling(__file__, "sdmae_pcam").get_config(arg)
  c.sdmae.sd_weight = 0.0
  return c
