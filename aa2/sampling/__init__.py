"""Sampling: the checkpoint's noise schedule (shared with training), the model as a k-diffusion-style
denoiser, and one registry of sampler functions over it (diffusers' schedulers wrapped, k_ samplers)."""
