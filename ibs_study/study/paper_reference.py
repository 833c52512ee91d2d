"""The paper's published numbers (de Geus & Dubbelman, WACV 2023), in percent, as printed.

These are results on *real* Cityscapes / Mapillary Vistas with ResNet-50 models trained on
GPUs. They are shown only as a labelled reference column beside measured numbers, never
mixed with them.
"""

from __future__ import annotations

__all__ = ["PAPER_PANOPTIC", "PAPER_INSTANCE", "PAPER_TRAINING"]

# (dataset, model, setting) -> metrics in percent; settings as in synthetic_results.json
PAPER_PANOPTIC: dict[tuple[str, str, str], dict[str, float]] = {
    # Table 1 (full vs crop) and Table 2 (main results)
    ("cityscapes", "pfcn", "full"): {
        "pq": 57.2,
        "pq_th": 51.1,
        "pq_st": 61.7,
        "acc_th": 85.1,
        "prec_th": 91.4,
    },
    ("cityscapes", "pfcn", "crop"): {
        "pq": 59.5,
        "pq_th": 52.2,
        "pq_st": 64.8,
        "acc_th": 81.3,
        "prec_th": 86.8,
    },
    ("cityscapes", "pfcn", "crop_ibs"): {
        "pq": 60.8,
        "pq_th": 54.7,
        "pq_st": 65.3,
        "acc_th": 87.1,
        "prec_th": 92.6,
    },
    ("cityscapes", "m2f", "crop"): {
        "pq": 62.1,
        "pq_th": 55.2,
        "pq_st": 67.2,
        "acc_th": 87.1,
        "prec_th": 93.3,
    },
    ("cityscapes", "m2f", "crop_ibs"): {
        "pq": 62.4,
        "pq_th": 55.7,
        "pq_st": 67.3,
        "acc_th": 87.6,
        "prec_th": 94.1,
    },
    # Tables 1, 2 and 3 (Vistas ablations)
    ("vistas", "pfcn", "full"): {"pq": 32.7, "pq_th": 29.8, "pq_st": 36.6, "acc_th": 73.8, "prec_th": 80.8},
    ("vistas", "pfcn", "crop"): {"pq": 35.5, "pq_th": 31.8, "pq_st": 40.3, "acc_th": 74.7, "prec_th": 77.9},
    ("vistas", "pfcn", "crop_ibs_random"): {
        "pq": 35.9,
        "pq_th": 32.9,
        "pq_st": 39.9,
        "acc_th": 76.3,
        "prec_th": 82.5,
    },
    ("vistas", "pfcn", "crop_ibs"): {
        "pq": 36.3,
        "pq_th": 33.6,
        "pq_st": 40.0,
        "acc_th": 77.0,
        "prec_th": 82.2,
    },
    ("vistas", "m2f", "crop"): {"pq": 41.5, "pq_th": 33.3, "pq_st": 52.4, "acc_th": 71.7, "prec_th": 78.8},
    ("vistas", "m2f", "crop_ibs"): {
        "pq": 42.2,
        "pq_th": 34.9,
        "pq_st": 52.0,
        "acc_th": 75.7,
        "prec_th": 84.1,
    },
}

# Table 4: Mask2Former instance segmentation on Mapillary Vistas val
PAPER_INSTANCE: dict[tuple[str, str, str], dict[str, float]] = {
    ("vistas", "m2f_instance", "crop"): {
        "ap": 17.4,
        "ap_s": 5.3,
        "ap_m": 18.2,
        "ap_l": 34.9,
        "acc_th": 73.4,
        "prec_th": 74.9,
    },
    ("vistas", "m2f_instance", "crop_ibs"): {
        "ap": 18.1,
        "ap_s": 4.8,
        "ap_m": 18.5,
        "ap_l": 36.8,
        "acc_th": 77.7,
        "prec_th": 79.2,
    },
}

# Training settings the paper and the official configs give, per (dataset, model, setting):
# the presets must carry exactly these (tests/test_presets.py compares them).
PAPER_TRAINING: dict[str, dict[str, object]] = {
    "cityscapes_pfcn_crop": {
        "train.max_steps": 65000,
        "train.batch_size": 32,
        "data.crop_size": (512, 1024),
        "optimizer.name": "sgd",
        "optimizer.lr": 0.02,
        "optimizer.weight_decay": 1e-4,
        "data.scale_range": (0.5, 2.0),
        "model.panoptic_fcn.encoder_channels": 256,
    },
    "cityscapes_pfcn_full": {
        "train.max_steps": 100000,
        "train.batch_size": 4,
        "data.crop_size": None,
        "optimizer.lr": 0.005,
        "data.scale_range": (0.5, 2.0),
    },
    "cityscapes_pfcn_crop_ibs": {
        "ibs.enabled": True,
        "ibs.weight": 1.0,
        "model.panoptic_fcn.segment_weight": 4.0,
        "sampler.kind": "paired",
        "ibs.partner": "pair_mate",
    },
    "cityscapes_pfcn_crop_ibs_random": {
        "ibs.enabled": True,
        "ibs.weight": 1.0,
        "sampler.kind": "random",
        "ibs.partner": "random",
    },
    "vistas_pfcn_crop": {
        "train.max_steps": 150000,
        "train.batch_size": 32,
        "data.crop_size": (1024, 1024),
        "optimizer.lr": 0.02,
        "data.short_edges": tuple(range(1024, 2049, 128)),
        "model.panoptic_fcn.pos_num": 3,
    },
    "vistas_pfcn_full": {
        "train.max_steps": 150000,
        "train.batch_size": 8,
        "data.crop_size": None,
        "optimizer.lr": 0.005,
    },
    "vistas_pfcn_crop_ibs": {
        "ibs.weight": 5.0,
        "model.panoptic_fcn.segment_weight": 3.0,
        "sampler.kind": "paired",
    },
    "vistas_pfcn_crop_ibs_random": {"ibs.weight": 5.0, "sampler.kind": "random", "ibs.partner": "random"},
    "cityscapes_m2f_crop": {
        "train.max_steps": 90000,
        "train.batch_size": 16,
        "data.crop_size": (512, 1024),
        "optimizer.name": "adamw",
        "optimizer.lr": 1e-4,
        "optimizer.weight_decay": 0.05,
        "model.mask2former.num_queries": 100,
        "model.mask2former.dec_layers": 10,
    },
    "cityscapes_m2f_crop_ibs": {"ibs.weight": 50.0, "sampler.kind": "paired", "ibs.point_sampling": True},
    "vistas_m2f_crop": {
        "train.max_steps": 300000,
        "train.batch_size": 16,
        "data.crop_size": (1024, 1024),
        "optimizer.lr": 1e-4,
    },
    "vistas_m2f_crop_ibs": {"ibs.weight": 100.0, "sampler.kind": "paired"},
    "vistas_m2f_instance_crop": {
        "model.mask2former.task": "instance",
        "train.max_steps": 300000,
        "data.crop_size": (1024, 1024),
    },
    "vistas_m2f_instance_crop_ibs": {
        "model.mask2former.task": "instance",
        "ibs.weight": 100.0,
        "sampler.kind": "paired",
    },
}
