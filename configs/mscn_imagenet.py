r"""MSCN on ImageNet-1k with ResNet-50: the documented pod recipe (NOT run here).

Paper: Jing, Zhu & LeCun, arXiv 2206.07700 (ImageNet-1k / ResNet-50
defaults; [A] = assumed where the paper gives none). Method "siamese" (maskssl/methods/siamese.py):

* Backbone: ResNet-50 v1.5, ImageNet stem, NHWC, Kaiming-normal fan_out
  init, ``zero_init_residual=True``, BN eps 1e-5 / torch momentum 0.1;
  BatchNorm statistics over the global batch of each view (SyncBN semantics
  under a sharded ``jit``), one forward per view / masked copy.
* Projector: per loss (spec 2.2): vicreg 2048-8192-8192-8192 (no last bias),
  barlow_twins 8192x3 without biases, simclr 2048-2048-128.
* Loss: ``vicreg`` 25/25/1 (default framework [A]); ``--config.loss.name``
  switches to ``simclr`` (tau 0.1) or ``barlow_twins`` (lambda 5e-3).
* Masking (``config.mscn``): HPF k = 13, sigma = 5 on the [0, 1] image,
  / 0.08 [R]; grid 7x7, ratio U[0.05, 0.25] [R]; focal window 200/224 [R];
  kinds focal 0.2 / grid 0.24 / channel 0.56 [R]; noise N(0, 0.25^2) [R];
  J = 2 masked copies of view A [A]; view B unmasked (asymmetric);
  ``hpf_at_eval=True``. ``--config.mscn.enabled=False`` = plain baseline.
* Augmentation: RandomResizedCrop(224, scale (0.08, 1)) + flip on device;
  ``photometric="none"`` (spec default [A]; "simclr" adds jitter/grayscale).
* Optimiser: LARS (momentum 0.9, trust coefficient 1e-3, biases and BN
  excluded from weight decay and adaptation), base lr 0.2 x batch/256,
  wd 1e-6, 10 warm-up epochs, cosine to base/1000; batch 2048; 100 epochs
  (ablations) -- use ``:long`` for 300 epochs (headline runs).
* Precision: float32 params; ``--config.model.compute_dtype=bfloat16`` for
  the convolutions (BN statistics, HPF and losses stay float32).
* Data: TFDS ``imagenet2012`` prepared locally (``data.tfds_data_dir``).
  GAP: the library has no ImageNet data module yet; ``data.name =
  "imagenet2012"`` needs one registered in maskssl/data/__init__.py (decode +
  resize to a fixed host size, uint8 NHWC; crops then happen on device);
  evaluation: kNN monitor (k=20, t=0.07) and a linear probe on frozen
  2048-d features (VICReg protocol: 100 epochs, SGD momentum 0.9, lr 0.3
  cosine, wd 1e-6, batch 256), both with the HPF at eval.

Command (multi-host pod; the batch axis is sharded over all devices)::

    python -m maskssl.main --config=configs/mscn_imagenet.py \
        --workdir=gs://BUCKET/mscn_r50_in1k --multihost \
        --config.data.tfds_data_dir=gs://BUCKET/tfds

Not run in this repository (no accelerator, no ImageNet here): the config is
only checked to build (``get_config()``) and to construct the method. No
results are claimed; the paper's ImageNet low-shot / VOC / COCO numbers were
not available when this was written (spec sec. 6).
"""
import ml_collections

from maskssl.data.base import LOADER_FIELDS

from maskssl.masks import mscn as mscn_lib

TRAIN_SIZE = 1281167


def get_config(arg=None):
  if arg not in (None, "", "long"):
    raise ValueError(f"unknown variant {arg!r}; use ':long' or nothing")
  c = ml_collections.ConfigDict()
  c.method = "siamese"
  c.seed = 0
  c.batch_size = 2048
  epochs = 300 if arg == "long" else 100
  spe = TRAIN_SIZE // c.batch_size
  c.total_steps = spe * epochs
  c.num_epochs = 0.0
  c.log_every = 100
  c.checkpoint_every = 2 * spe
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.parallel = dict(fsdp=False)

  c.data = dict(name="imagenet2012", source="tfds", tfds_name="imagenet2012",
                tfds_data_dir="", image_key="image", image_size=224,
                pretrain_split="pretrain",
                # input pipeline (threads, workers, bad_records, ...)
                **LOADER_FIELDS)

  c.model = dict(backbone="resnet50", stem="imagenet", width=64,
                 stage_sizes=None, init_scheme="kaiming_fan_out",
                 zero_init_residual=True, compute_dtype="float32",
                 projector_width=8192, projector_dims=None,
                 projector_init="pytorch")

  c.loss = dict(name="vicreg", temperature=0.1, lambd=5e-3,
                bt_standardize="batchnorm", bt_eps=1e-5, sim_coeff=25.0,
                std_coeff=25.0, cov_coeff=1.0, vic_eps=1e-4)

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
  c.optim = dict(name="lars", lr=base_lr, schedule="cosine",
                 warmup_steps=10 * spe, end_lr=base_lr / 1000,
                 weight_decay=1e-6, momentum=0.9, trust_coefficient=1e-3,
                 clip_norm=0.0)

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
