r"""SD-MAE on PatchCamelyon (Luo et al., arXiv 2203.16983); plain MAE is
configs/mae_pcam.py (this config with ``sdmae.sd_weight = 0``). Default =
the README recipe: ViT-S/16 at 224, mask ratio 0.6, p = 0.2, AdamW lr 2.4e-3
(6e-4 x 1024/256), 100 epochs of TFDS ``patch_camelyon`` (prepared locally);
linear probe, reconstruction PNG, fine-tuning with MAE's recipe.

  python -m maskssl.main --config=configs/sdmae_pcam.py:quick --workdir=runs/sdmae_quick
  python -m maskssl.main --config=configs/sdmae_pcam.py:sample --workdir=runs/sdmae_sample
  python benchmarks/reproduce_images.py --task=pcam   # random init, MAE, SD-MAE
  python -m maskssl.main --config=configs/sdmae_pcam.py \
      --config.data.tfds_data_dir=~/tensorflow_datasets --workdir=runs/sdmae_pcam
Variants (``:a,b``): quick (tiny ViT, embedded sample), sample (6-block
ViT-Ti/16 at 96 px, embedded sample), p8 (patch 8 at 96 px), tiny / base
(encoder size), reference (= default), cpu (the reproduction budget, PCam
10k tar via --config.data.path; excludes quick and sample).

:sample linear-probe test AUC, 100 patches, seeds 0-2 (within noise; more
in benchmarks/results/config_history.md):
  SD-MAE 0.676 +- 0.021   MAE 0.661 +- 0.023   random init 0.717 +- 0.023
"""
import ml_collections

from maskssl.config_utils import load_sibling

common = load_sibling(__file__, "common")

VARIANTS = ("quick", "sample", "p8", "tiny", "base", "reference", "cpu")
# :cpu budget (pretraining / fine-tune / probe epochs on the 10k PCam tar)
CPU_EPOCHS, CPU_FT_EPOCHS, CPU_PROBE_EPOCHS = 12, 4, 10
# no weight decay on these (nor on biases and norm params)
NO_DECAY = ("q_bias", "v_bias", "mask_token")


def get_config(arg=None):
  opts = common.variants(arg, VARIANTS,
                         exclusive=[("cpu", "quick"), ("cpu", "sample")])
  quick, sample, cpu = "quick" in opts, "sample" in opts, "cpu" in opts
  small_data = quick or sample
  c = ml_collections.ConfigDict()
  c.method = "sdmae"
  c.seed = 0
  c.batch_size = 1024
  epochs, steps_per_epoch = 100, 262144 // 1024
  c.total_steps = epochs * steps_per_epoch
  c.num_epochs = 0.0
  c.log_every = 100
  c.checkpoint_every = 2000
  c.keep_checkpoints = 3
  c.async_checkpoints = True

  c.data = common.data("pcam", source="tfds")

  c.model = dict(variant="small", image_size=224, patch_size=16, enc_dim=0,
                 enc_depth=0, enc_heads=0, dec_dim=0, dec_depth=0,
                 dec_heads=0, mlp_ratio=4.0, compute_dtype="bfloat16")
  if "tiny" in opts:
    c.model.variant = "tiny"
  if "base" in opts:
    c.model.variant = "base"
  if "p8" in opts:
    c.model.image_size, c.model.patch_size = 96, 8

  c.sdmae = dict(
      mask_ratio=0.6, sd_weight=0.2, teacher_temp=0.04, student_temp=0.1,
      center_momentum=0.9, center_on="probs", teacher_stop_grad=False,
      head_hidden=2048, head_bottleneck=256, head_out=4096,
      alpha_visible=0.0, target_eps=1e-6, augment=True,
      crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3),
      encode_pool="fc_norm")

  base_lr = 6e-4
  c.optim = common.optim(lr=base_lr * c.batch_size / 256,
                         warmup_steps=5 * steps_per_epoch, end_lr=1e-5,
                         weight_decay=0.05, no_decay_names=NO_DECAY)
  c.parallel = dict(fsdp=False, fsdp_min_size=2 ** 14)
  # fine-tuning model settings read by SDMAE.classifier
  c.finetune = dict(drop_path=0.1, init_scale=0.001)

  c.evals = ml_collections.ConfigDict()
  # Linear probe (spec 6.3, code defaults): frozen encoder, fc_norm(mean
  # pool) features, BatchNorm(affine=False, eps 1e-6) -> Dense, SGD momentum
  # 0.9, lr 0.1 x 512/256, wd 0, 90 epochs (10 warm-up) cosine, batch 512;
  # RandomResizedCrop + flip per epoch straight to the encoder's input size
  # (``size``, set below from model.image_size); test: MAE main_linprobe's
  # Resize(int(size / 0.875)) + CenterCrop(size) (bilinear here, bicubic
  # there).
  c.evals.linear_probe = dict(
      type="linear_probe", every=0, enabled=True, train_split="train",
      test_split="test", augment=True, norm="batchnorm", bn_eps=1e-6,
      size=224, crop_scale=(0.08, 1.0), flip_p=0.5, test_crop=0.875,
      epochs=90, warmup_epochs=10, batch_size=512, train_subset=0, seed=0,
      encode_batch_size=256,
      optim=dict(name="sgd", lr=0.1 * 512 / 256, momentum=0.9,
                 weight_decay=0.0, clip_norm=0.0))
  c.evals.reconstruction = dict(type="reconstruction", every=0, enabled=True,
                                split="test", num_images=8, seed=0)
  c.evals.finetune = dict(
      type="finetune", every=0, enabled=True, num_labels=(0,), seeds=(0,),
      inits=("pretrained",), batch_size=1024, num_epochs=100.0,
      total_steps=0, eval_every=2000, log_every=200, eval_batch_size=512,
      task="auto", verbose=True, layer_decay=0.75,
      optim=common.optim(lr=1e-3 * 1024 / 256,
                         warmup_steps=5 * steps_per_epoch, end_lr=1e-6,
                         weight_decay=0.05, no_decay_names=NO_DECAY),
      model_overrides={},
      # The MAE fine-tune recipe (main_finetune.py, which SD-MAE uses), on
      # device in the train step: RandomResizedCrop(crop_scale, crop_ratio,
      # bicubic) + flip hflip -> RandAugment rand_augment (timm string;
      # "" = off) -> random erasing reprob (per-pixel N(0, 1) in normalised
      # space) -> Mixup alpha `mixup` / CutMix alpha `cutmix` (switch
      # mixup_switch_prob, applied with mixup_prob) -> label smoothing;
      # two_class: PCam as two logits with soft-target cross-entropy, AUC
      # from P(tumour). Eval: Resize(int(size / crop_pct)) + CenterCrop(size),
      # eval_crop_pct 0 = MAE's 224/256. Plain fine-tuning (the batch as it
      # is, one BCE logit): --config.evals.finetune.augment=none
      # --config.evals.finetune.two_class=False
      augment="reference", two_class=True,
      rand_augment="rand-m9-mstd0.5-inc1", reprob=0.25, mixup=0.8,
      cutmix=1.0, mixup_switch_prob=0.5, mixup_prob=1.0, smoothing=0.1,
      crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=0.5,
      eval_crop_pct=0.0)

  if small_data:
    c.data.source = "embedded"
    c.model.compute_dtype = "float32"
    c.evals.finetune.enabled = False
    c.evals.linear_probe.batch_size = 160
    c.evals.linear_probe.optim.lr = 0.1
    c.evals.linear_probe.epochs = 100
    c.evals.linear_probe.warmup_epochs = 10
    c.log_every = 20
  if sample:
    # A 6-block ViT-Ti (192-d) with 16 px patches at 96 px (36 patches)
    # on the 200 pretraining patches: 200 steps of 40 = 40 epochs, sized
    # to run in minutes on 2 CPU cores.
    c.model.update(variant="tiny", image_size=96, patch_size=16, enc_depth=6)
    c.sdmae.update(head_hidden=512, head_bottleneck=256)
    c.batch_size = 40
    c.total_steps = 200
    c.checkpoint_every = 200
    c.optim.update(lr=1.5e-3, warmup_steps=20, end_lr=1e-5)
  if quick:
    c.model.update(variant="tiny", image_size=32, patch_size=8, enc_dim=64,
                   enc_depth=2, enc_heads=2, dec_dim=64, dec_depth=1,
                   dec_heads=2)
    c.sdmae.update(head_hidden=256, head_bottleneck=64)
    c.batch_size = 40
    c.total_steps = 40
    c.checkpoint_every = 40
    c.log_every = 10
    c.optim.update(lr=1e-3, warmup_steps=5, end_lr=1e-5)
    c.evals.linear_probe.epochs = 30
    c.evals.linear_probe.warmup_epochs = 3
    c.evals.linear_probe.bn_momentum = None    # 30 steps: cumulative average
  if cpu:
    # PCam 10k tar, 1,000 test patches held out (stratified), 900 val: a
    # 12-block ViT-Ti/16 at the native 96 px (36 patches, 21 masked), 9,000
    # pretraining patches, CPU_EPOCHS epochs of batch 128.
    c.data.update(source="auto", test_fraction=0.1, val_fraction=0.1)
    c.model.update(variant="tiny", image_size=96, patch_size=16,
                   compute_dtype="float32")
    c.sdmae.update(head_hidden=512, head_bottleneck=256)
    c.batch_size = 128
    spe = 9000 // c.batch_size
    c.total_steps = CPU_EPOCHS * spe
    c.checkpoint_every = 5 * spe
    c.log_every = 20
    # the recipe's lr at batch 128 (6e-4 x 128/256), 5 % warm-up as 5/100
    c.optim.update(lr=base_lr * c.batch_size / 256,
                   warmup_steps=max(1, CPU_EPOCHS * spe // 20))
    ft = c.evals.finetune
    ft.update(batch_size=128, num_epochs=float(CPU_FT_EPOCHS), eval_every=50,
              log_every=50, eval_batch_size=256)
    ft.optim.update(lr=1e-3 * 128 / 256,
                    warmup_steps=max(1, CPU_FT_EPOCHS * 8100 // 128 // 20))
    lp = c.evals.linear_probe
    lp.update(epochs=CPU_PROBE_EPOCHS, warmup_epochs=1, batch_size=256)
    lp.optim.lr = 0.1 * 256 / 256
  c.evals.linear_probe.size = c.model.image_size   # crop once, to the input
  return c
