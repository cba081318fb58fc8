"""Schedulers, the k-diffusion-style denoiser, the clip pipeline and the long-video chainer."""
