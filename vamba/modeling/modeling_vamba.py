"""Vamba: Qwen2-VL whose text tokens cross-attend to the video and whose video tokens run through Mamba blocks.

Subclasses of transformers' Qwen2-VL classes overriding only what Vamba changes: the decoder layer (DESIGN.md
section 2), the text model's forward (it carries the video stream next to the text), the multimodal model's forward
(the video is not scattered into the text) and the cache (`cache.py`: every layer's video keys/values; encoding for
generation in `encode.py`). Vision tower, attention, MLP, norms, rotary, masks, loss and generation are transformers'.

Decoder layer l, with x the text hidden states and V the video hidden states entering the layer:

    h   = RMSNorm_in(x)
    x'  = x + a_l * SelfAttn_l(h) + (1 - a_l) * CrossAttn_l(q = h, kv = V)
    x'' = x' + MLP_l(RMSNorm_post(x'))
    V'  = V + Mamba2_l(RMSNorm_l(V))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    Qwen2VisionTransformerPretrainedModel,
    Qwen2VLDecoderLayer,
    Qwen2VLForConditionalGeneration,
    Qwen2VLModel,
    Qwen2VLPreTrainedModel,
    Qwen2VLRMSNorm,
    Qwen2VLRotaryEmbedding,
    Qwen2VLTextModel,
)

from .cache import VambaCache
from .compat import CACHE, LOAD_DEFAULTS, BaseOutput, accept_cache
from .configuration_vamba import VambaConfig, VambaTextConfig
from .cross_attention import Block, VambaCrossAttention, attention_blocks
from .encode import encode_video, encode_video_streaming
from .errors import UsageError
from .mamba2 import Mamba1Mixer, Mamba2Mixer, build_mixer
from .video_slice import SliceContext, slice_mixer_forward, slice_stream
from .video_stream import (
    VideoStream,
    VisualItem,
    assemble_video_stream,
    check_pixels,
    marker_kinds,
    packed_sample_index,
)


@dataclass
class CrossAttentionContext:
    """What every layer's cross-attention needs, computed once per forward by the text model.

    visible: (B, N, M) bool; seq_idx: (B, M) int32 for the mixer (None when decoding);
    query_rope / key_rope: (cos, sin) pairs when M-RoPE is on in cross-attention, else None.
    """

    visible: torch.Tensor
    seq_idx: torch.Tensor | None = None
    query_rope: tuple[torch.Tensor, torch.Tensor] | None = None
    key_rope: tuple[torch.Tensor, torch.Tensor] | None = None
    cache: VambaCache | None = None
    slices: SliceContext | None = None  # context parallel: the stream is one slice; merge with the others
    blocks: list[Block] | None = None  # `visible` as `attention_blocks` (None: the mask is used)


class VisionMixerBlock(nn.Module):
    """V' = V + Mixer(RMSNorm(V)). Names match the release (`vision_mixer.norm`, `vision_mixer.mixer`)."""

    def __init__(self, config: VambaTextConfig, layer_idx: int):
        super().__init__()
        settings = dict(config.mixer_config)
        self.norm = Qwen2VLRMSNorm(config.hidden_size, eps=settings.get("norm_eps", 1e-5))
        # GPT-2 style 1/sqrt(n_layers) scaling of the residual branch's output projection (the release's
        # rescale_prenorm_residual, on by default).
        rescale = settings.pop("rescale_prenorm_residual", True)
        self.mixer = build_mixer(
            config.mixer_type,
            config.hidden_size,
            layer_idx=layer_idx,
            out_proj_scale=config.num_hidden_layers**-0.5 if rescale else 1.0,
            **settings,
        )

    def forward(
        self, video_states: torch.Tensor, seq_idx: torch.Tensor | None = None, state=None,
        slices: SliceContext | None = None,
    ) -> torch.Tensor:
        """video_states: (B, M, d); seq_idx: (B, M) int32, the mixer restarts where it changes; `state`: a
        `Mamba2State` to continue from and update (streaming prefill); `slices`: V is one slice of a stream split
        over a group (context parallel), joined exactly by `slice_mixer_forward`."""
        if slices is not None:
            return video_states + slice_mixer_forward(self.mixer, self.norm(video_states), seq_idx, slices)
        if state is not None:
            return video_states + self.mixer(self.norm(video_states), seq_idx=seq_idx, state=state)
        return video_states + self.mixer(self.norm(video_states), seq_idx=seq_idx)


class VambaDecoderLayer(Qwen2VLDecoderLayer):
    """Qwen2-VL decoder layer + cross-attention to the video + a Mamba block on the video (see module docstring)."""

    def __init__(self, config: VambaTextConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.layer_idx = layer_idx
        self.cross_attn = VambaCrossAttention(config, layer_idx)
        self.vision_mixer = VisionMixerBlock(config, layer_idx) if config.mixer_type != "none" else None
        self.alpha = nn.Parameter(torch.full((1,), 0.5)) if config.use_alpha_balancing else None
        self.cross_attn_use_layer_norm = config.cross_attn_use_layer_norm

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        video_states: torch.Tensor | None = None,
        cross: CrossAttentionContext | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: VambaCache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        update_video: bool = True,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One layer on both streams.

        Args:
            hidden_states: x, (B, N, d) text hidden states.
            video_states: V, (B, M, d) video hidden states entering this layer; None when decoding from a cache
                (the layer then reads its cached video keys/values) or for text-only input.
            cross: masks and positions for cross-attention; None for text-only input, in which case the layer is
                exactly transformers' Qwen2-VL layer.
            update_video: False for the last layer, whose V' nothing reads.

        Returns:
            (x'', V') with V' None when V was None or this layer has no mixer work to do.
        """
        residual = hidden_states
        h = self.input_layernorm(hidden_states)
        self_out, _ = self.self_attn(
            hidden_states=h,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{CACHE: cache},
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        if cross is None:
            hidden_states = residual + self_out
        else:
            video_kv, video_states = self._video_kv(video_states, cross, update_video)
            cross_out, has_video = self.cross_attn(h, video_kv, cross.visible, cross.query_rope, cross.slices,
                                                   cross.blocks)
            # Tokens that see no video (text-only samples in a batch or pack) keep the base layer exactly.
            a = self.alpha.clamp(0.0, 1.0).to(self_out.dtype) if self.alpha is not None else None
            w_self = torch.where(has_video, a, 1.0) if a is not None else 1.0
            w_cross = (1.0 - a) if a is not None else 1.0
            hidden_states = residual + w_self * self_out + w_cross * cross_out

        residual = hidden_states
        hidden_states = residual + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, video_states

    def video_step(
        self,
        video_states: torch.Tensor,
        key_rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        seq_idx: torch.Tensor | None = None,
        state=None,
        update: bool = True,
        slices: SliceContext | None = None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The layer's video half: cross-attention keys/values of V and V' = V + Mixer(RMSNorm(V)).

        video_states: (B, M, d). With `cross_attn_use_layer_norm` the release replaces V by RMSNorm_in(V) for the
        rest of the layer: the keys/values, the mixer block and its residual all read the normed stream.
        `state`: a `Mamba2State` to continue from (streaming prefill); `update=False` skips the mixer (last layer).

        Returns: ((k, v) each (B, kv_heads, M, head_dim), V' (B, M, d)).
        """
        if self.cross_attn_use_layer_norm:
            video_states = self.input_layernorm(video_states)
        kv = self.cross_attn.project_video(video_states, key_rope)
        if update and self.vision_mixer is not None:
            video_states = self.vision_mixer(video_states, seq_idx=seq_idx, state=state, slices=slices)
        return kv, video_states

    def _video_kv(
        self, video_states: torch.Tensor | None, cross: CrossAttentionContext, update: bool
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """Prefill: the video step (keys/values stored in the cache); decoding: the cached keys/values."""
        if video_states is None:
            if cross.cache is None or self.layer_idx not in cross.cache.video_kv:
                raise ValueError(f"layer {self.layer_idx}: no video states and no cached video keys/values")
            return cross.cache.video_kv[self.layer_idx], None
        kv, video_states = self.video_step(video_states, cross.key_rope, cross.seq_idx, update=update,
                                           slices=cross.slices)
        if cross.cache is not None:
            cross.cache.video_kv[self.layer_idx] = kv
        return kv, video_states


def _is_new_layer(name: str) -> bool:
    """Whether a parameter belongs to a layer Vamba adds to Qwen2-VL (absent from a Qwen2-VL checkpoint)."""
    return any(tag in name for tag in ("cross_attn.", "vision_mixer.", ".alpha"))


def _mixer_params_loaded(mixer: nn.Module) -> bool:
    """True if loading already filled the mixer, or if ZeRO-3 partitioned it (then its constructor did the init).

    Only the mixer's own parameters (A_log, D, dt_bias) tell: transformers initialises and flags child Linear/Conv1d
    modules before it visits the block, so a flag on `in_proj.weight` does not mean the checkpoint held the mixer.
    """
    return any(getattr(p, "_is_hf_initialized", False) or hasattr(p, "ds_id") for p in mixer.parameters(recurse=False))


class VambaTextModel(Qwen2VLTextModel):
    """Qwen2-VL's language model with Vamba layers; its forward carries the video stream beside the text."""

    config: VambaTextConfig
    config_class = VambaTextConfig
    _no_split_modules = ["VambaDecoderLayer"]

    def __init__(self, config: VambaTextConfig):
        Qwen2VLPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([VambaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Qwen2VLRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.has_sliding_layers = "sliding_attention" in config.layer_types
        self.rotary_emb = Qwen2VLRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, VambaDecoderLayer) and module.alpha is not None:
            init.constant_(module.alpha, 0.5)
        elif isinstance(module, (Mamba2Mixer, Mamba1Mixer)) and not _mixer_params_loaded(module):
            # mamba_ssm's init (A, dt, D, default Linear/Conv1d) and the scaled out_proj. Partitioned ZeRO-3
            # parameters were initialised whole in the mixer's constructor, so there is nothing to redo. Done on
            # the mixer itself, not on VisionMixerBlock: transformers skips modules of non-library models that hold
            # no parameters of their own, so a block-level init never ran when loading a Qwen2-VL checkpoint.
            with torch.no_grad():
                module.reset_parameters()
            for p in module.parameters():
                p._is_hf_initialized = True

    @accept_cache
    def forward(  # type: ignore[override]
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: VambaCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        video: VideoStream | None = None,
        slices: SliceContext | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Run text (B, N) and, if given, the video stream (B, M, d) through all layers (`slices`: the stream is one
        slice of a sample's video split over a group, see `vamba.modeling.video_slice`).

        `position_ids` are plain text positions, (B, N) (or (3, B, N) with equal rows); positions that restart
        mark packed samples, as in transformers (only without attention_mask and cache).
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, length = inputs_embeds.shape[:2]
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None and not self.training:
            cache = VambaCache(config=self.config)
        if cache is not None and not isinstance(cache, VambaCache) and (video is not None or cache.get_seq_length()):
            raise ValueError(f"Vamba needs a VambaCache to keep the video keys/values, got {type(cache)}")

        past_seen = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(length, device=inputs_embeds.device) + past_seen
            position_ids = position_ids[None].expand(batch, -1)
        elif position_ids.ndim == 3:  # M-RoPE layout from callers of Qwen2-VL: for text all rows are equal
            position_ids = position_ids[-1]
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids[None].expand(3, batch, -1))

        if isinstance(attention_mask, dict):
            mask_mapping = attention_mask
        else:
            mask_kwargs = dict(
                config=self.config,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **{CACHE: cache},
            )
            mask_mapping = {"full_attention": create_causal_mask(**mask_kwargs)}
            if self.has_sliding_layers:
                mask_mapping["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)

        cross = self._cross_context(video, cache, position_ids, attention_mask, position_embeddings, slices)
        hidden_states = inputs_embeds
        video_states = video.states if video is not None else None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            hidden_states, video_states = layer(
                hidden_states,
                video_states,
                cross=cross,
                attention_mask=mask_mapping[self.config.layer_types[i]],
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                update_video=i < last,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **{CACHE: cache})

    def _cross_context(
        self,
        video: VideoStream | None,
        cache: VambaCache | None,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        query_rope: tuple[torch.Tensor, torch.Tensor],
        slices: SliceContext | None = None,
    ) -> CrossAttentionContext | None:
        """Masks and positions for cross-attention, once per forward (prefill: from the stream; decode: cache)."""
        cache = cache if isinstance(cache, VambaCache) else None
        use_rope = self.config.cross_attn_use_position_embeddings
        batch, length = position_ids.shape
        if video is not None:
            packed = attention_mask is None and (cache is None or cache.get_seq_length() == 0)
            text_sample = packed_sample_index(position_ids if packed else None, batch, length, position_ids.device)
            visible = text_sample[:, :, None] == video.sample_idx[:, None, :]
            key_rope = None
            if use_rope:
                key_rope = self.rotary_emb(video.states, video.grid_positions)
            if cache is not None:
                cache.video_visible = video.sample_idx == text_sample[:, -1:]
                cache.slices = slices
            return CrossAttentionContext(
                visible=visible,
                blocks=attention_blocks(text_sample, video.sample_idx),
                seq_idx=video.seq_idx,
                query_rope=query_rope if use_rope else None,
                key_rope=key_rope,
                cache=cache,
                slices=slices,
            )
        if cache is not None and cache.has_video:
            visible = cache.video_visible[:, None, :].expand(batch, length, -1)
            return CrossAttentionContext(visible=visible, query_rope=query_rope if use_rope else None, cache=cache,
                                         slices=cache.slices, blocks=attention_blocks(
                                             torch.zeros_like(position_ids), cache.video_visible.long() - 1))
        return None


class VambaModel(Qwen2VLModel):
    """Qwen2-VL vision tower + Vamba language model; the visual tokens form a separate stream."""

    config_class = VambaConfig

    def __init__(self, config: VambaConfig):
        Qwen2VLPreTrainedModel.__init__(self, config)
        self.visual = Qwen2VisionTransformerPretrainedModel._from_config(config.vision_config)
        self.language_model = VambaTextModel._from_config(config.text_config)
        self.rope_deltas = None
        self.post_init()

    @accept_cache
    def forward(  # type: ignore[override]
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: VambaCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        mm_encoder_outputs: dict | None = None,
        video_token_keep: float | None = None,
        context_parallel: SliceContext | None = None,
        **kwargs,
    ) -> BaseOutput:
        """Encode images/videos with the vision tower and run the text model beside the visual stream.

        `context_parallel`: this rank's slice of the sample's visual stream and the hooks that join it to the other
        slices of its group (`vamba.parallel`); it holds this slice's pixels, so no pixel tensors are passed.

        `video_token_keep` (0, 1]: keep that fraction of each item's visual tokens, uniformly spaced, before the
        language model (the paper's token-reduction variant uses 0.5 at inference).

        Args:
            input_ids: (B, N) chat text; each visual item appears only as its marker `<|vision_start|><|vision_end|>`
                (the release's layout, images and videos alike), never as inline visual tokens.
            mm_token_type_ids: (B, N) 1 (image) or 2 (video) at each `<|vision_start|>`, 0 elsewhere; needed only
                when a batch holds both images and videos (see `video_stream.marker_kinds`).
            pixel_values / pixel_values_videos: (patches, C*tp*p*p) as produced by Qwen2-VL's processors.
            image_grid_thw / video_grid_thw: (items, 3) patch grid of each item, in the order items appear.
        """
        if mm_encoder_outputs:
            raise ValueError("Vamba encodes images/videos itself at prefill; pass pixel values, not mm_encoder_outputs")
        video = None
        decoding = cache is not None and getattr(cache, "has_video", False)
        if decoding:
            pass  # the video was encoded at prefill; its keys/values are in the cache
        elif context_parallel is not None:
            if video_token_keep is not None and video_token_keep < 1:
                raise ValueError("video_token_keep is not supported with context parallel")
            video = slice_stream(self, context_parallel, self.language_model.embed_tokens.weight.dtype)
        elif pixel_values is not None or pixel_values_videos is not None:
            if input_ids is None or input_ids.shape[-1] == 0:
                raise ValueError("a video or image needs text: input_ids is empty, so there is nothing to answer with")
            items = self._encode(pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
            if video_token_keep is not None and not 0 < video_token_keep <= 1:
                raise ValueError(f"video_token_keep must be in (0, 1], got {video_token_keep}")
            if video_token_keep is not None and video_token_keep < 1:
                items = {k: [it.keep_fraction(video_token_keep) for it in v] for k, v in items.items()}
            video = self._video_stream(input_ids, items, attention_mask, position_ids, cache,
                                       mm_token_type_ids)
        elif input_ids is not None and (cache is None or cache.get_seq_length() == 0):
            n_markers = int((input_ids == self.config.vision_start_token_id).sum())
            if n_markers:
                raise ValueError(
                    f"input_ids hold {n_markers} vision marker(s) (<|vision_start|>, id "
                    f"{self.config.vision_start_token_id}) but no pixel_values/pixel_values_videos were given"
                )
        if video is None and self.training:
            batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
            video = self._placeholder_stream(batch, self.visual.get_device())
        return BaseOutput(**self.language_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            video=video,
            slices=context_parallel if video is not None and not decoding else None,
            **kwargs,
        ))

    def _encode(
        self,
        pixel_values: torch.Tensor | None,
        image_grid_thw: torch.Tensor | None,
        pixel_values_videos: torch.Tensor | None,
        video_grid_thw: torch.Tensor | None,
    ) -> dict[str, list[VisualItem]]:
        """Images and videos through the vision tower in ONE call (items stay independent: the tower attends
        within each item). One call per forward whatever the batch holds keeps ZeRO-3's parameter gathering in
        step across ranks."""
        kinds = {
            "image": (pixel_values, image_grid_thw)
            if check_pixels(self.visual, pixel_values, image_grid_thw, "pixel_values", "image_grid_thw")
            else None,
            "video": (pixel_values_videos, video_grid_thw)
            if check_pixels(self.visual, pixel_values_videos, video_grid_thw, "pixel_values_videos", "video_grid_thw")
            else None,
        }
        present = [(k, v) for k, v in kinds.items() if v is not None]
        # One kind present (the usual case): no concatenation, which would copy every pixel once more.
        grid = present[0][1][1] if len(present) == 1 else torch.cat([g for _, (_, g) in present])
        pixels = present[0][1][0] if len(present) == 1 else torch.cat([p for _, (p, _) in present])
        pixels = pixels.type(self.visual.dtype)
        embeds = self.visual(pixels, grid_thw=grid).pooler_output
        merge = self.visual.spatial_merge_size
        sizes = (grid.prod(-1) // merge**2).tolist()
        items = [
            VisualItem(e, (int(t), int(h) // merge, int(w) // merge))
            for e, (t, h, w) in zip(torch.split(embeds, sizes), grid.tolist())
        ]
        out: dict[str, list[VisualItem]] = {"image": [], "video": []}
        start = 0
        for kind, (_, g) in present:
            out[kind] = items[start : start + len(g)]
            start += len(g)
        return out

    def _placeholder_stream(self, batch: int, device: torch.device) -> VideoStream:
        """A one-token visual stream that no text token can see (sample index -1).

        Used in training when a batch has no image or video: every rank still runs the vision tower, the
        cross-attention projections and the mixers, so ZeRO-3 gathers the same parameters in the same order on
        all ranks and DDP sees every parameter used. Its effect on the loss is exactly zero (fully masked
        cross-attention contributes 0 and tokens seeing no video keep the base layer).
        """
        v = self.config.vision_config
        merge = v.spatial_merge_size
        row = v.in_channels * v.temporal_patch_size * v.patch_size**2
        pixels = torch.zeros(merge * merge, row, device=device, dtype=self.visual.dtype)
        embeds = self.visual(pixels, grid_thw=torch.tensor([[1, merge, merge]], device=device)).pooler_output
        states = embeds.to(self.language_model.embed_tokens.weight.dtype)[None].expand(batch, -1, -1)
        hidden = torch.full((batch, 1), -1, dtype=torch.long, device=device)
        return VideoStream(
            states=states,
            sample_idx=hidden,
            seq_idx=torch.zeros_like(hidden, dtype=torch.int32),
            grid_positions=torch.zeros(3, batch, 1, dtype=torch.long, device=device),
        )

    def _video_stream(
        self,
        input_ids: torch.Tensor,
        items: dict[str, list[VisualItem]],
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        cache: VambaCache | None,
        mm_token_type_ids: torch.Tensor | None = None,
    ) -> VideoStream:
        """Give each `<|vision_start|>` marker the next item of its kind, row by row, in text order."""
        batch, length = input_ids.shape
        if position_ids is not None and position_ids.ndim == 3:
            position_ids = position_ids[-1]
        packed = attention_mask is None and (cache is None or cache.get_seq_length() == 0)
        text_sample = packed_sample_index(position_ids if packed else None, batch, length, input_ids.device)
        is_marker = input_ids == self.config.vision_start_token_id
        kinds = marker_kinds(self.config, input_ids, mm_token_type_ids, len(items["image"]), len(items["video"]))
        queues = {"image": list(items["image"]), "video": list(items["video"])}
        n_markers = {"image": int((kinds == 1).sum()), "video": int((kinds == 2).sum())}
        for kind, queue in queues.items():
            if n_markers[kind] != len(queue):
                raise ValueError(
                    f"input_ids hold {n_markers[kind]} {kind} marker(s) (<|vision_start|><|vision_end|>) but "
                    f"{len(queue)} {kind}(s) were given"
                )
        rows = []
        for b in range(batch):
            positions = is_marker[b].nonzero().flatten().tolist()
            row_kinds = kinds[b, positions].tolist()
            row_samples = text_sample[b, positions].tolist()
            rows.append([(s, queues["image" if k == 1 else "video"].pop(0)) for s, k in zip(row_samples, row_kinds)])
        dtype = self.language_model.embed_tokens.weight.dtype
        return assemble_video_stream(rows, self.config.text_config.hidden_size, dtype, input_ids.device)


class VambaForConditionalGeneration(Qwen2VLForConditionalGeneration):
    """Vamba with a language-model head: `forward` (with loss), `generate`, save/load like any transformers model."""

    config_class = VambaConfig
    _no_split_modules = ["VambaDecoderLayer", "Qwen2VLVisionBlock"]

    def __init__(self, config: VambaConfig):
        Qwen2VLPreTrainedModel.__init__(self, config)
        self.model = VambaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, new_layers: bool = False, **kwargs):
        """transformers' `from_pretrained`, reading our, the release's and stock Qwen2-VL configs (`VambaConfig`),
        but strict: a weight the checkpoint lacks or does not fit is an error, never a randomly initialised layer.

        `new_layers=True` (used by `from_qwen2vl`) allows exactly the layers Vamba adds to be missing.
        """
        want_info = kwargs.pop("output_loading_info", False)
        where = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        try:
            model, info = super().from_pretrained(*args, output_loading_info=True, **{**LOAD_DEFAULTS, **kwargs})
        except SafetensorError as e:  # a truncated or corrupt weights file: name the checkpoint
            raise UsageError(f"{where}: cannot read the checkpoint's weights ({e})") from e
        missing = sorted(k for k in info["missing_keys"] if not (new_layers and _is_new_layer(k)))
        problems = {k: v for k, v in (("missing", missing), ("unexpected", sorted(info["unexpected_keys"])),
                                      ("mismatched", sorted(str(m) for m in info["mismatched_keys"]))) if v}
        if problems:
            detail = "; ".join(f"{k} ({len(v)}): {v[:6]}" for k, v in problems.items())
            hint = " (a stock Qwen2-VL checkpoint? convert it first: `vamba convert`)" if missing else ""
            raise UsageError(f"{where}: weights do not match the model{hint}: {detail}")
        return (model, info) if want_info else model

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        # Text-only positions: the video is not in the text, so no M-RoPE rows or rope deltas are needed.
        return GenerationMixin._prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs)

    def _prepare_multimodal_encoder_kwargs_for_generation(self, model_kwargs: dict) -> dict:
        # Keep raw pixels and grids: the forward encodes them at prefill, where it also needs each item's grid.
        return model_kwargs

    # One sample's visual items encoded once (streamed past `stream_above_frames`); see `vamba.modeling.encode`.
    encode_video = encode_video
    encode_video_streaming = encode_video_streaming

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        if type(model_kwargs.get(CACHE)) is DynamicCache:
            model_kwargs[CACHE] = VambaCache(config=self.config.get_text_config(decoder=True))
