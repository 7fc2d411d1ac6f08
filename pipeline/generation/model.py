"""The DSD conditional transformer: FLUX with a condition embedder on the patch embedding.

DSD treats the reference as the first frame of a two-frame canvas. The clean reference enters as
a condition latent `[reference | black]`, embedded by a zero-initialised linear layer and added to
the patch embedding of the noisy canvas:

    h = x_embedder(noisy) + c_embedder(condition)

which is channel concatenation written as two matrices. Everything else is stock FLUX: same RoPE
ids for the whole canvas, one timestep for all tokens. At initialisation the model is exactly the
base model, so a plain FLUX checkpoint is a valid starting point for training.
"""

import torch

# `ModelMixin` must be an attribute of this module: `DiffusionPipeline.from_pretrained` looks a
# component's loading method up among the base classes its module exposes.
from diffusers import FluxTransformer2DModel, ModelMixin  # noqa: F401
from diffusers.configuration_utils import register_to_config
from torch import nn


class ConditionedPatchEmbed(nn.Linear):
    """FLUX's `x_embedder` that also reads a condition: input channels are `[noisy | condition]`.

    It is the original `nn.Linear` (same parameters, same state-dict keys `x_embedder.*`). The
    condition embedder is registered on the transformer as `c_embedder`, the key name of the
    released weights; this module only holds a reference to it, in a tuple so that it is not
    registered twice. Given only the noisy channels it is the stock patch embedding.
    """

    def __init__(self, in_features: int, out_features: int, c_embedder: nn.Linear):
        super().__init__(in_features, out_features)
        self._c_embedder = (c_embedder,)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.shape[-1] == self.in_features:
            return super().forward(hidden_states)
        noisy, condition = hidden_states.split(self.in_features, dim=-1)
        return super().forward(noisy) + self._c_embedder[0](condition)


class DSDTransformer2DModel(FluxTransformer2DModel):
    """`FluxTransformer2DModel` plus `c_embedder`; `forward` takes `cond_hidden_states`.

    The condition is packed like the latents (B, L, in_channels). An all-zero condition means
    "no image" (how training drops the condition); note that `c_embedder`'s bias still applies.
    """

    @register_to_config
    def __init__(
        self,
        patch_size: int = 1,
        in_channels: int = 64,
        out_channels: int | None = None,
        num_layers: int = 19,
        num_single_layers: int = 38,
        attention_head_dim: int = 128,
        num_attention_heads: int = 24,
        joint_attention_dim: int = 4096,
        pooled_projection_dim: int = 768,
        guidance_embeds: bool = False,
        axes_dims_rope: tuple[int, int, int] = (16, 56, 56),
    ):
        # The signature repeats FLUX's because diffusers reads a model's config from its signature.
        super().__init__(
            patch_size=patch_size, in_channels=in_channels, out_channels=out_channels, num_layers=num_layers,
            num_single_layers=num_single_layers, attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads, joint_attention_dim=joint_attention_dim,
            pooled_projection_dim=pooled_projection_dim, guidance_embeds=guidance_embeds,
            axes_dims_rope=axes_dims_rope,
        )
        self.c_embedder = nn.Linear(in_channels, self.inner_dim)
        nn.init.zeros_(self.c_embedder.weight)
        nn.init.zeros_(self.c_embedder.bias)
        patch_embed = ConditionedPatchEmbed(in_channels, self.inner_dim, self.c_embedder)
        patch_embed.load_state_dict(self.x_embedder.state_dict())
        self.x_embedder = patch_embed

    def forward(self, hidden_states: torch.Tensor, cond_hidden_states: torch.Tensor | None = None, **kwargs):
        if cond_hidden_states is not None:
            hidden_states = torch.cat([hidden_states, cond_hidden_states.to(hidden_states.dtype)], dim=-1)
        return super().forward(hidden_states, **kwargs)
