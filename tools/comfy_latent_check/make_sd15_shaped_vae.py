"""A randomly initialised AutoencoderKL of SD1.5's shape, saved as safetensors (diffusers keys,
which ComfyUI's VAELoader converts): the host's VAE Decode and the pack then hold the same VAE."""

import sys

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

torch.manual_seed(0)
vae = AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                    block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                    sample_size=512, scaling_factor=0.18215)
save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, sys.argv[1])
