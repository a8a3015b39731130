"""A small pi0-style flow-matching chunk model in plain torch (no torchvision, CPU friendly).

Observation prefix: each camera image goes through one shared small CNN (a camera embedding is
added to its tokens so the expert can tell views apart), the proprio state through an MLP; the
tokens pass one self-attention layer. The action expert is a transformer over the noisy chunk
tokens (action + flow-time embedding, learned positions) that self-attend and cross-attend to the
observation tokens and predict the flow velocity ``v(A, tau)``.

The prefix is encoded ONCE per inference (:meth:`FlowModel.encode_prefix`, which also caches every
expert layer's cross-attention keys/values) and reused across all Euler steps
(:meth:`FlowModel.velocity`). Flow time convention: ``tau = 0`` noise, ``tau = 1`` data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class FlowModelConfig:
    """Architecture hyper-parameters; saved as ``config.json`` next to the weights.

    ``image_size`` is (height, width) of the input images in pixels; ``image_downsample`` an
    average-pooling factor applied first (the encoder sees ``image_size / image_downsample``).
    """

    chunk_size: int = 50
    action_dim: int = 14
    state_dim: int = 14
    camera_names: tuple[str, ...] = ("head", "left", "right")
    image_size: tuple[int, int] = (96, 128)
    image_downsample: int = 1
    dim: int = 128
    heads: int = 4
    expert_layers: int = 3
    prefix_layers: int = 1
    cnn_channels: tuple[int, ...] = (16, 32, 32, 64, 64)
    mlp_ratio: int = 4
    keypoints: int = 32
    coord_conv: bool = True
    aux_dim: int = 0  # >0: an auxiliary head predicts a privileged target (training only, e.g. cube xy)
    # >0: trained with action-prefix conditioning (training-time RTC, Black et al. 2025, arXiv
    # 2512.05964): a random prefix of 0..train_prefix_max clean actions at flow time 1, the loss on
    # the rest; such a model continues a chunk with no VJP (``guidance: trained``)
    train_prefix_max: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["camera_names"] = list(self.camera_names)
        out["image_size"] = list(self.image_size)
        out["cnn_channels"] = list(self.cnn_channels)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlowModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown flow model config keys: {sorted(unknown)}")
        data = dict(data)
        for key in ("camera_names", "image_size", "cnn_channels"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def sinusoidal_embedding(tau: torch.Tensor, dim: int, max_period: float = 100.0) -> torch.Tensor:
    """(B,) flow times in [0, 1] -> (B, dim) sin/cos features (periods 4e-3 .. ``max_period``)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period / 4e-3) * torch.arange(half, device=tau.device, dtype=torch.float32) / half
    ) * (2 * math.pi / 4e-3)
    args = tau.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class ImageEncoder(nn.Module):
    """Shared per-camera CNN: (N, 3, h, w) in [0, 1] -> (N, tokens, dim).

    Tokens: the coarse final feature map (one per cell, learned positions) plus one keypoint
    token: a spatial softmax over an intermediate (about 1/8 resolution) map gives the expected
    image coordinates of ``keypoints`` learned features, the classic inductive bias for locating
    small objects (the cube is ~3 px wide in the head camera). ``coord_conv`` appends x/y
    coordinate channels to the input.
    """

    def __init__(self, cfg: FlowModelConfig) -> None:
        super().__init__()
        self.coord_conv = cfg.coord_conv
        self.stages = nn.ModuleList()
        c_in = 5 if cfg.coord_conv else 3
        for i, c_out in enumerate(cfg.cnn_channels):
            k = 5 if i == 0 else 3
            self.stages.append(
                nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=2, padding=k // 2), nn.GroupNorm(8, c_out), nn.SiLU())
            )
            c_in = c_out
        self.proj = nn.Linear(c_in, cfg.dim)
        self.kp_stage = max(0, len(cfg.cnn_channels) - 3)
        self.keypoints = cfg.keypoints
        if cfg.keypoints > 0:
            self.kp_conv = nn.Conv2d(cfg.cnn_channels[self.kp_stage], cfg.keypoints, 1)
            self.kp_proj = nn.Sequential(nn.Linear(2 * cfg.keypoints, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        h = cfg.image_size[0] // cfg.image_downsample
        w = cfg.image_size[1] // cfg.image_downsample
        for _ in cfg.cnn_channels:
            h, w = (h + 1) // 2, (w + 1) // 2
        self.num_tokens = h * w + (1 if cfg.keypoints > 0 else 0)
        self.pos = nn.Parameter(torch.randn(1, h * w, cfg.dim) * 0.02)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _grid(h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ys = torch.linspace(-1.0, 1.0, h, device=like.device, dtype=like.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=like.device, dtype=like.dtype)
        return ys[:, None].expand(h, w), xs[None, :].expand(h, w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        if self.coord_conv:
            gy, gx = self._grid(x.shape[-2], x.shape[-1], x)
            x = torch.cat([x, gy.expand(x.shape[0], 1, -1, -1), gx.expand(x.shape[0], 1, -1, -1)], dim=1)
        kp_tok = None
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == self.kp_stage and self.keypoints > 0:
                logits = self.kp_conv(x).flatten(2)  # (N, K, h*w)
                attn = torch.softmax(logits.float(), dim=-1).to(x.dtype)
                gy, gx = self._grid(x.shape[-2], x.shape[-1], x)
                ky = (attn * gy.reshape(1, 1, -1)).sum(-1)
                kx = (attn * gx.reshape(1, 1, -1)).sum(-1)
                kp_tok = self.kp_proj(torch.cat([kx, ky], dim=-1))[:, None]
        tokens = self.proj(x.flatten(2).transpose(1, 2)) + self.pos  # (N, cells, dim)
        return tokens if kp_tok is None else torch.cat([tokens, kp_tok], dim=1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def kv_of(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(context).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        k, v = kv if kv is not None else self.kv_of(x)
        if k.shape[0] != x.shape[0]:  # one observation prefix shared by a batch of chunks
            k = k.expand(x.shape[0], -1, -1, -1)
            v = v.expand(x.shape[0], -1, -1, -1)
        q = self._split(self.q(x))
        y = F.scaled_dot_product_attention(q, k, v)
        b, h, n, dh = y.shape
        return self.out(y.transpose(1, 2).reshape(b, n, h * dh))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__(nn.Linear(dim, dim * ratio), nn.GELU(approximate="tanh"), nn.Linear(dim * ratio, dim))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ratio: int) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.n1(x))
        return x + self.mlp(self.n2(x))


class ExpertLayer(nn.Module):
    """Self-attention over chunk tokens, cross-attention to cached observation K/V, MLP."""

    def __init__(self, dim: int, heads: int, ratio: int) -> None:
        super().__init__()
        self.n1, self.n2, self.n3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads)
        self.mlp = Mlp(dim, ratio)

    def forward(self, x: torch.Tensor, ctx_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.self_attn(self.n1(x))
        x = x + self.cross_attn(self.n2(x), ctx_kv)
        return x + self.mlp(self.n3(x))


@dataclass
class Prefix:
    """The encoded observation: per expert layer cross-attention (K, V), each (B, heads, N, dh)."""

    kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    tokens: torch.Tensor | None = None

    def repeat(self, n: int) -> Prefix:
        """Each observation's encoding ``n`` times in a row (batch B -> B * n): B observations with n
        chunks each, sampled in one call."""
        if n == 1:
            return self
        kv = [(k.repeat_interleave(n, dim=0), v.repeat_interleave(n, dim=0)) for k, v in self.kv]
        return Prefix(kv, None if self.tokens is None else self.tokens.repeat_interleave(n, dim=0))


class FlowModel(nn.Module):
    """Observation encoder + flow-matching action expert. Works in model (normalized) space."""

    def __init__(self, cfg: FlowModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        if cfg.camera_names:  # a state-only model (no cameras) has no image encoder
            self.image_encoder = ImageEncoder(cfg)
            self.camera_embed = nn.Parameter(torch.randn(len(cfg.camera_names), 1, d) * 0.02)
        self.state_proj = nn.Sequential(nn.Linear(cfg.state_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.prefix_layers = nn.ModuleList(
            [EncoderLayer(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.prefix_layers)]
        )
        self.prefix_norm = nn.LayerNorm(d)
        self.action_in = nn.Linear(cfg.action_dim, d)
        self.action_time_mlp = nn.Sequential(nn.Linear(2 * d, d), nn.SiLU(), nn.Linear(d, d))
        self.action_pos = nn.Parameter(torch.randn(1, cfg.chunk_size, d) * 0.02)
        self.expert = nn.ModuleList([ExpertLayer(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.expert_layers)])
        self.out_norm = nn.LayerNorm(d)
        self.action_out = nn.Linear(d, cfg.action_dim)
        if cfg.aux_dim > 0:
            self.aux_head = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, cfg.aux_dim))
        nn.init.zeros_(self.action_out.weight)
        nn.init.zeros_(self.action_out.bias)

    # -- observation prefix -------------------------------------------------------------------
    def encode_prefix(self, state: torch.Tensor, images: torch.Tensor) -> Prefix:
        """state (B, state_dim) normalized; images (B, cams, 3, H, W) float in [0, 1] (cams may be 0:
        a state-only model's prefix is the state token alone)."""
        b, n_cam = images.shape[:2]
        if n_cam != len(self.cfg.camera_names):
            raise ValueError(f"expected {len(self.cfg.camera_names)} cameras, got {n_cam}")
        tokens = self.state_proj(state)[:, None]
        if n_cam:
            x = images.flatten(0, 1)
            if self.cfg.image_downsample > 1 and x.shape[-2:] == tuple(self.cfg.image_size):
                x = F.avg_pool2d(x, self.cfg.image_downsample)
            tok = self.image_encoder(x).view(b, n_cam, -1, self.cfg.dim) + self.camera_embed[None]
            tokens = torch.cat([tok.flatten(1, 2), tokens], dim=1)
        for layer in self.prefix_layers:
            tokens = layer(tokens)
        tokens = self.prefix_norm(tokens)
        return Prefix([layer.cross_attn.kv_of(tokens) for layer in self.expert], tokens)

    # -- action expert --------------------------------------------------------------------------
    def velocity(self, prefix: Prefix, actions: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """Flow velocity for noisy chunks ``actions`` (B, H, action_dim) at flow time ``tau``.

        ``tau`` is a scalar, a (B,) tensor or per-token (B, H) / (1, H) flow times in [0, 1]
        (0 = noise). ``prefix`` may hold batch 1 (shared by every chunk) or batch B.
        """
        b, h = actions.shape[:2]
        a = self.action_in(actions)
        if tau.dim() == 2:  # per-token flow times (B, H): a clean prefix sits at tau = 1
            t_emb = sinusoidal_embedding(tau.expand(b, h).reshape(-1), self.cfg.dim).view(b, h, -1).to(actions.dtype)
        else:
            tau = tau.reshape(-1).expand(b) if tau.numel() == 1 else tau.reshape(b)
            t_emb = sinusoidal_embedding(tau, self.cfg.dim).to(actions.dtype)[:, None].expand_as(a)
        x = self.action_time_mlp(torch.cat([a, t_emb], dim=-1)) + self.action_pos
        for layer, kv in zip(self.expert, prefix.kv):
            x = layer(x, kv)
        return self.action_out(self.out_norm(x))

    def forward(
        self,
        state: torch.Tensor,
        images: torch.Tensor,
        actions: torch.Tensor,
        aux: torch.Tensor | None = None,
        prefix_actions: torch.Tensor | None = None,
        replan_ticks: int = 0,
        continuation_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training entry point (so wrappers such as Lightning Fabric apply precision): the loss."""
        return self.loss(
            state,
            images,
            actions,
            aux=aux,
            prefix_actions=prefix_actions,
            replan_ticks=replan_ticks,
            continuation_labels=continuation_labels,
        )

    def loss(
        self,
        state: torch.Tensor,
        images: torch.Tensor,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        aux: torch.Tensor | None = None,
        prefix_actions: torch.Tensor | None = None,
        replan_ticks: int = 0,
        continuation_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Conditional flow-matching loss: x_tau = tau*A + (1-tau)*eps, target v = A - eps.

        Flow times are drawn like pi0 (Beta(1.5, 1) over the *noise* end): more weight on noisy
        times, which matter most for the first Euler steps.

        With ``cfg.train_prefix_max > 0`` (training-time RTC) each sample's first ``d`` actions,
        ``d`` uniform in ``0..train_prefix_max``, are given clean at flow time 1 (per-token flow
        times) and the loss covers only the others: the model learns to continue a known prefix.

        ``prefix_actions`` (B, H, action_dim), the stale-prefix-robust recipe: the clean prefix is
        taken from it instead of from ``actions`` (e.g. an earlier chunk's continuation, planned
        before the world changed) and the labels after it are :func:`replan_labels`: they start
        from the prefix's last action and blend back onto ``actions`` within ``replan_ticks``, so
        the model learns to honour committed actions and still re-plan from the observation. A
        sample whose ``prefix_actions`` equal its ``actions`` trains exactly as the paper's recipe.

        ``continuation_labels`` (B, D + 1, H, action_dim), when a demonstrator can say exactly what
        it would do after given committed actions (the gym tasks' experts through their dynamics):
        entry ``d`` is the whole chunk for prefix length ``d`` (its first ``d`` actions the committed
        ones, the rest the demonstrator's plan from where they lead; entry 0 the plain label). The
        prefix and the labels after it are that entry, ``d`` drawn in ``0..min(train_prefix_max, D)``.
        """
        b, h = actions.shape[:2]
        noise = torch.randn(actions.shape, generator=generator, device=actions.device, dtype=actions.dtype)
        u = torch.distributions.Beta(1.5, 1.0).sample((b,)).to(actions.device)
        tau = 1.0 - (u * 0.999 + 0.001)
        tb = tau[:, None, None].to(actions.dtype)
        x_tau = tb * actions + (1.0 - tb) * noise
        prefix = self.encode_prefix(state, images)
        target = (actions - noise).float()
        d_max = min(int(self.cfg.train_prefix_max), h - 1)
        if continuation_labels is not None:
            d_max = min(d_max, continuation_labels.shape[1] - 1)
        if d_max > 0:
            d = torch.randint(0, d_max + 1, (b,), generator=generator, device=actions.device)
            clean = torch.arange(h, device=actions.device)[None, :] < d[:, None]  # (B, H)
            if continuation_labels is not None:
                source = continuation_labels[torch.arange(b, device=actions.device), d].to(actions.dtype)
                x_tau = tb * source + (1.0 - tb) * noise
                target = (source - noise).float()
            elif prefix_actions is not None:
                source = prefix_actions.to(actions.dtype)
                labels = replan_labels(actions, source, d, replan_ticks)
                x_tau = tb * labels + (1.0 - tb) * noise
                target = (labels - noise).float()
            else:
                source = actions
            x_tau = torch.where(clean[..., None], source, x_tau)
            tau_tok = torch.where(clean, torch.ones_like(tau)[:, None], tau[:, None].expand(b, h))
            pred = self.velocity(prefix, x_tau, tau_tok.to(actions.dtype))
            free = (~clean).to(target.dtype)[..., None]
            loss = ((pred.float() - target) ** 2 * free).sum() / (free.sum() * actions.shape[-1])
        else:
            pred = self.velocity(prefix, x_tau, tau.to(actions.dtype))
            loss = F.mse_loss(pred.float(), target)
        if aux is not None and self.cfg.aux_dim > 0:
            loss = loss + F.mse_loss(self.aux_head(prefix.tokens.mean(1)).float(), aux.float())
        return loss


def replan_labels(
    actions: torch.Tensor, prefix_actions: torch.Tensor, d: torch.Tensor, replan_ticks: int
) -> torch.Tensor:
    """Labels for a chunk whose first ``d`` actions are committed from ``prefix_actions``.

    ``actions``/``prefix_actions`` (B, H, A), ``d`` (B,) prefix lengths. Index ``i < d`` keeps the
    prefix; from ``d`` on the label is the current plan ``actions[i]`` plus the prefix's offset at
    its last action, ``prefix[d-1] - actions[d-1]``, fading linearly to 0 over ``replan_ticks``
    actions (``1 - (i - d + 1) / (replan_ticks + 1)``): the chunk leaves the committed actions
    without a jump and is back on the informed plan ``replan_ticks`` actions later. ``d = 0`` or a
    prefix equal to the plan gives ``actions`` unchanged.
    """
    b, h = actions.shape[:2]
    idx = torch.arange(h, device=actions.device)[None, :]  # (1, H)
    d = d.to(actions.device).reshape(b, 1)
    last = (d - 1).clamp(min=0)  # (B, 1) index of the prefix's last action
    gather = last[..., None].expand(b, 1, actions.shape[-1])
    offset = torch.gather(prefix_actions, 1, gather) - torch.gather(actions, 1, gather)  # (B, 1, A)
    fade = (1.0 - (idx - d + 1).to(actions.dtype) / (max(0, int(replan_ticks)) + 1)).clamp(0.0, 1.0)
    fade = torch.where((idx >= d) & (d > 0), fade, torch.zeros_like(fade))  # (B, H)
    out = actions + fade[..., None] * offset
    return torch.where((idx < d)[..., None], prefix_actions, out)
