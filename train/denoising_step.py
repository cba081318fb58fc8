"""One training forward of Animate Anyone 2: ReferenceNet, conditions, DenoisingNet (paper §3.1).

`DenoisingStep` wraps `AA2Model` so that accelerate (DDP) sees one module whose `forward` runs
everything that has gradients: the ReferenceNet (every step, with gradients — unlike inference it is
not cached), the pose modulation, the object guider and the DenoisingNet.

Classifier-free guidance dropout drops the CLIP context *and* the reference bank together, as the
pipeline's unconditional branch sees them (zero context, no reference attention), so the model
learns the branch guidance subtracts.

The reference bank stays bound after `forward` returns: with gradient checkpointing the
DenoisingNet's attention layers run again during `backward` and must see the same reference
tokens. The caller unbinds with `release()` after `backward`.
"""

from __future__ import annotations

import torch
from torch import nn

from aa2.models.aa2_model import AA2Model
from aa2.models.denoising_net import DenoisingConditions


class DenoisingStep(nn.Module):
    """`forward(noisy [B, 4, F, h, w], timesteps [B], inputs, use_reference) -> prediction [B, 4, F, h, w]`."""

    def __init__(self, model: AA2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, inputs: dict[str, torch.Tensor | None],
                use_reference: bool = True) -> torch.Tensor:
        model, net = self.model, self.model.denoising_net
        context = inputs["context"]
        if use_reference:
            bank = model.encode_reference(inputs["reference_latents"], context)
            model.bind_reference(bank)
        else:
            context = torch.zeros_like(context)
            model.bind_reference(None)
        conditions = DenoisingConditions(
            environment=inputs["environment"],
            pose_features=net.pose_modulation(inputs["skeleton"], inputs["depth"]),
        )
        if inputs.get("object_latents") is not None:
            conditions.object_features = net.encode_objects(inputs["object_latents"])
        return net(noisy, timesteps, context, conditions)

    def release(self) -> None:
        """Unbind the reference bank (after `backward`)."""
        self.model.bind_reference(None)
