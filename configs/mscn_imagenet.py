r"""MSCN on ImageNet-1k with ResNet-50: the documented pod recipe (NOT run here).

Paper: Jing, Zhu & LeCun, arXiv 2206.07700 (ImageNet-1k / ResNet-50
defaults). Method "siamese": a ResNet-50 v1.5, the vicreg projector
2048-8192-8192-8192, the MSCN masks at 224 px (HPF k = 13, sigma = 5; grid
7x7; J = 2 masked copies), LARS (base lr 0.2 x batch/256, wd 1e-6, 10
warm-up epochs, cosine), batch 2048, 100 epochs (``:long``: 300). Data:
TFDS ``imagenet2012`` prepared locally. The full recipe, with provenance,
is in benchmarks/results/config_history.md.

Command (multi-host pod; the batch axis is sharded over all devices)::

    python -m maskssl.main --config=configs/mscn_imagenet.py \
        --workdir=gs://BUCKET/mscn_r50_in1k --multihost \
        --config.data.tfds_data_dir=gs://BUCKET/tfds

Variants: (none) 100 epochs, long (300 epochs, headline runs). Not run in
this repository (no accelerator, no ImageNet here): only checked to build
and to construct the method; no results are claimed.
"""
import ml_collections

from maskssl.config_utils import load_sibling
from maskssl.masks import mscn as mscn_lib

common = load_sibling(__file__, "common")

TRAIN_SIZE = 1281167


def get_config(arg=None):
  opts = common.variants(arg, ("long",))
  c = ml_collections.ConfigDict()
  c.method = "siamese"
  c.seed = 0
  c.batch_size = 2048
  epochs = 300 if "long" in opts else 100
  spe = TRAIN_SIZE // c.batch_size
  c.total_steps = spe * epochs
  c.num_epochs = 0.0
  c.log_every = 100
  c.checkpoint_every = 2 * spe
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.parallel = dict(fsdp=False)

  c.data = common.data("imagenet2012")   # TFDS, 224 px crops

  c.model = dict(backbone="resnet50", stem="imagenet", width=64,
                 stage_sizes=None, init_scheme="kaiming_fan_out",
                 zero_init_residual=True, compute_dtype="float32",
                 projector_width=8192, projector_dims=None,
                 projector_init="pytorch")

  c.loss = common.siamese_loss("vicreg")

  c.augment = dict(size=224, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                   flip_p=0.5, photometric="none", jitter_p=0.8,
                   brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                   grayscale_p=0.2, mean=(0.485, 0.456, 0.406),
                   std=(0.229, 0.224, 0.225))

  c.mscn = mscn_lib.default_config(224)
  c.mscn.hpf_kernel = 13
  c.mscn.hpf_sigma = 5.0
  c.mscn.n_masked_views = 2

  base_lr = 0.2 * c.batch_size / 256
  c.optim = common.optim(name="lars", lr=base_lr, warmup_steps=10 * spe,
                         end_lr=base_lr / 1000, weight_decay=1e-6)

  c.evals = ml_collections.ConfigDict()
  c.evals.knn = dict(type="knn", every=0, k=20, temperature=0.07,
                     bank_split="train", test_split="test",
                     encode_batch_size=1024)
  c.evals.linear_probe = dict(
      type="linear_probe", every=0, epochs=100, batch_size=256, warmup_epochs=0,
      # VICReg evaluate.py: RandomResizedCrop(224) + flip, plain Linear;
      # test Resize(256) + CenterCrop(224)
      augment=True, norm="none", size=224, test_crop=0.875,
      encode_batch_size=1024,
      optim=dict(name="sgd", lr=0.3, momentum=0.9, weight_decay=1e-6,
                 decay_all=True, schedule="cosine", clip_norm=0.0))
  return c
