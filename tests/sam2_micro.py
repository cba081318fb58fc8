"""A micro SAM2 (~0.64 M parameters, 64-px input) written to disk for tests that run the real
`sam2` video predictor through `load_sam2`.

The structure is SAM2.1 tiny's (Hiera trunk with a global-attention block, FPN neck, memory
attention and encoder, SAM heads) at a fraction of its widths. Random weights make masks
meaningless, with one exception made on purpose: the object-score head always answers "object
present", or SAM2 would replace every mask logit with a constant on frames a random head calls
empty.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

HIDDEN, MEMORY, IMAGE_SIZE = 32, 16, 64


def micro_config(hidden: int = HIDDEN) -> dict:
    """Overrides on the bundled SAM2.1 tiny config; memory horizon 4 frames (num_maskmem 3,
    max_obj_ptrs_in_encoder 3)."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(str(resources.files("sam2") / "configs/sam2.1/sam2.1_hiera_t.yaml"))
    feat = [IMAGE_SIZE // 16, IMAGE_SIZE // 16]
    micro = {"model": {
        "image_size": IMAGE_SIZE, "num_maskmem": 3, "max_obj_ptrs_in_encoder": 3,
        "image_encoder": {
            "trunk": {"embed_dim": 8, "num_heads": 1, "stages": [1, 1, 2, 1],
                      "global_att_blocks": [3], "window_pos_embed_bkg_spatial_size": [4, 4]},
            "neck": {"d_model": hidden, "backbone_channel_list": [64, 32, 16, 8],
                     "position_encoding": {"num_pos_feats": hidden}},
        },
        "memory_attention": {"d_model": hidden, "num_layers": 1, "layer": {
            "d_model": hidden, "dim_feedforward": 64,
            "self_attention": {"embedding_dim": hidden, "feat_sizes": feat},
            "cross_attention": {"embedding_dim": hidden, "feat_sizes": feat, "kv_in_dim": MEMORY},
        }},
        "memory_encoder": {
            "out_dim": MEMORY, "in_dim": hidden, "position_encoding": {"num_pos_feats": MEMORY},
            "mask_downsampler": {"embed_dim": hidden},
            "fuser": {"num_layers": 1, "layer": {"dim": hidden}},
        },
    }}
    return OmegaConf.to_container(OmegaConf.merge(base, micro))


def write_micro_checkpoint(root: Path, seed: int = 0) -> dict[str, Path]:
    """Random micro weights as Meta's `.pt` ({"model": state_dict}) and the config as yaml."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = micro_config()
    torch.manual_seed(seed)
    model = instantiate(OmegaConf.create(config)["model"], _recursive_=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    head = "sam_mask_decoder.pred_obj_score_head.layers.2"
    state[f"{head}.weight"].zero_()
    state[f"{head}.bias"].fill_(10.0)  # "object present" on every frame
    root.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, root / "sam2_micro.pt")
    (root / "sam2_micro.yaml").write_text(OmegaConf.to_yaml(config))
    return {"pt": root / "sam2_micro.pt", "yaml": root / "sam2_micro.yaml"}
