"""The official e4e / pSp image encoders: an IR or IR-SE ResNet body with a feature-pyramid of style heads.

Module structure and attribute names follow the official code (models/encoders/helpers.py and
psp_encoders.py of omertov/encoder4editing) so its state dicts load with strict=True.
`Encoder4Editing` predicts one base code w0 (repeated to every style) plus per-style offsets that are
opened progressively during training; `GradualStyleEncoder` (pSp) predicts every style freely.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from e4e.errors import E4EError
from e4e.nets.layers import EqualLinear

# Bottleneck units per stage for the official depths (stage widths 64, 128, 256, 512).
UNITS_PER_STAGE = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
OFFICIAL_WIDTHS = (64, 128, 256, 512)
INFERENCE = "inference"


class SEModule(nn.Module):
    """Squeeze-and-excitation gate; 1x1 convs (not Linear) so the keys read fc1/fc2.weight."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class BottleneckIR(nn.Module):
    """ArcFace's pre-activation unit: BN -> conv3x3 -> PReLU -> conv3x3(stride) -> BN [-> SE], plus shortcut.

    The stride sits on the second conv; an identity shortcut is a stride-only MaxPool2d(1) as in the
    official code (no parameters), a widening one is conv1x1 + BN.
    """

    def __init__(self, in_ch: int, depth: int, stride: int, se: bool = False):
        super().__init__()
        if in_ch == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        layers = [
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


def input_layer(width: int = 64) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.PReLU(width))


def build_body(units: tuple[int, ...], widths: tuple[int, ...], mode: str) -> nn.Sequential:
    """The flat `body` Sequential: each stage opens with a stride-2 unit, as official get_blocks does.

    The first stage's input width equals its own width (the input layer's), so body.0 has no
    shortcut parameters, matching the official checkpoints.
    """
    if mode not in ("ir", "ir_se"):
        raise E4EError(f"backbone mode must be 'ir' or 'ir_se', got {mode!r}")
    modules = []
    in_ch = widths[0]
    for n, depth in zip(units, widths):
        for i in range(n):
            modules.append(BottleneckIR(in_ch, depth, 2 if i == 0 else 1, se=mode == "ir_se"))
            in_ch = depth
    return nn.Sequential(*modules)


def stage_units(num_layers: int) -> tuple[int, ...]:
    if num_layers not in UNITS_PER_STAGE:
        raise E4EError(f"backbone num_layers must be one of 50, 100, 152, got {num_layers}")
    return UNITS_PER_STAGE[num_layers]


@dataclass
class EncoderConfig:
    """Settings of an e4e/pSp encoder. Defaults are the official FFHQ model.

    `units` and `widths` shrink the model for tests and tiny embedded models: `units` (4 ints) overrides
    the bottleneck count per stage that num_layers implies, `widths` (4 ints) the stage widths.
    `input_size` is the image side the heads are laid out for (official: 256, heads at 1/16, 1/8, 1/4).
    `head_width` is the style heads' conv width (0: style_dim, the official layout); a narrower head ends
    in an EqualLinear(head_width, style_dim), which keeps small models small (a 512-wide head is 2.4M
    parameters per conv).
    """
    kind: str = "e4e"  # "e4e" | "psp"
    num_layers: int = 50
    mode: str = "ir_se"
    stylegan_size: int = 1024
    style_dim: int = 512
    widths: tuple[int, int, int, int] = OFFICIAL_WIDTHS
    units: tuple[int, int, int, int] | None = None
    input_size: int = 256
    head_width: int = 0

    def __post_init__(self):
        if self.kind not in ("e4e", "psp"):
            raise E4EError(f"encoder kind must be 'e4e' or 'psp', got {self.kind!r}")
        if self.mode not in ("ir", "ir_se"):
            raise E4EError(f"encoder mode must be 'ir' or 'ir_se', got {self.mode!r}")
        if self.stylegan_size < 8 or self.stylegan_size & (self.stylegan_size - 1):
            raise E4EError(f"stylegan_size must be a power of two >= 8, got {self.stylegan_size}")
        if self.input_size < 16 or self.input_size & (self.input_size - 1):
            raise E4EError(f"encoder input_size must be a power of two >= 16, got {self.input_size}")
        self.widths = tuple(int(w) for w in self.widths)
        self.units = tuple(int(u) for u in self.units) if self.units is not None else stage_units(self.num_layers)
        if len(self.widths) != 4 or len(self.units) != 4 or min(self.widths) < 1 or min(self.units) < 1:
            raise E4EError(f"encoder needs 4 positive stage widths and unit counts, got {self.widths}, {self.units}")
        self.head_width = int(self.head_width) or self.style_dim
        if self.head_width < 1:
            raise E4EError(f"encoder head_width must be >= 1 (0: style_dim), got {self.head_width}")

    @property
    def n_styles(self) -> int:
        return 2 * int(math.log2(self.stylegan_size)) - 2

    @classmethod
    def from_state_dict(cls, state: dict, kind: str = "e4e") -> "EncoderConfig":
        """Read the architecture from encoder weights (e4e and pSp weights have the same keys: give kind).

        Stages are told apart by width, so this needs distinct stage widths (true of official models).
        """
        try:
            n_styles = sum(1 for k in state if k.startswith("styles.") and k.endswith(".linear.weight"))
            style_dim, head_width = state["styles.0.linear.weight"].shape
            head0_convs = sum(1 for k in state if k.startswith("styles.0.convs.") and k.endswith(".weight"))
            body_widths = []
            while f"body.{len(body_widths)}.res_layer.3.weight" in state:
                body_widths.append(state[f"body.{len(body_widths)}.res_layer.3.weight"].shape[0])
        except (KeyError, AttributeError, IndexError):
            raise E4EError("weights are not an e4e/pSp encoder state dict (no styles.0.linear.weight)") from None
        widths, units = [], []
        for w in body_widths:
            if widths and widths[-1] == w:
                units[-1] += 1
            else:
                widths.append(int(w))
                units.append(1)
        if len(widths) != 4 or n_styles < 2:
            raise E4EError(f"cannot read an encoder layout from these weights (stage widths {widths})")
        units = tuple(units)
        num_layers = next((n for n, u in UNITS_PER_STAGE.items() if u == units), 50)
        mode = "ir_se" if "body.0.res_layer.5.fc1.weight" in state else "ir"
        return cls(kind=kind, num_layers=num_layers, mode=mode, stylegan_size=2 ** ((n_styles + 2) // 2),
                   style_dim=int(style_dim), widths=tuple(widths), units=units, input_size=16 * 2 ** head0_convs,
                   head_width=int(head_width))


class GradualStyleBlock(nn.Module):
    """A style head: stride-2 convs (width out_ch) with LeakyReLU(0.01) down to 1x1, then an EqualLinear
    to style_dim (official: style_dim = out_ch)."""

    def __init__(self, in_ch: int, out_ch: int, spatial: int, style_dim: int | None = None):
        super().__init__()
        self.out_ch = out_ch
        layers = []
        for i in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, stride=2, padding=1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_ch, style_dim or out_ch, lr_mul=1)

    def forward(self, x):
        return self.linear(self.convs(x).view(-1, self.out_ch))


def upsample_add(x, lateral):
    return F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class _PyramidEncoder(nn.Module):
    """Shared body and feature pyramid. Styles 0-2 read c3, 3-6 read p2, 7+ read p1 (official indices)."""

    coarse_ind = 3
    middle_ind = 7

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.n_styles = cfg.n_styles
        self.style_dim = cfg.style_dim
        w = cfg.widths
        self.input_layer = input_layer(w[0])
        self.body = build_body(cfg.units, w, cfg.mode)
        # Taps at the ends of stages 2, 3, 4: body indices 6, 20, 23 for the 50-layer model, where the
        # official code hard-codes them (it supports no other depth).
        ends = [sum(cfg.units[:i + 1]) - 1 for i in range(4)]
        self._taps = (ends[1], ends[2], ends[3])
        s = cfg.input_size
        heads = []
        for i in range(self.n_styles):
            spatial = s // 16 if i < self.coarse_ind else s // 8 if i < self.middle_ind else s // 4
            heads.append(GradualStyleBlock(w[3], cfg.head_width, spatial, cfg.style_dim))
        self.styles = nn.ModuleList(heads)
        self.latlayer1 = nn.Conv2d(w[2], w[3], 1)
        self.latlayer2 = nn.Conv2d(w[1], w[3], 1)

    def features(self, x):
        """Body features (c1, c2, c3) at 1/4, 1/8 and 1/16 of the input side."""
        x = self.input_layer(x)
        taps = []
        for i, module in enumerate(self.body):
            x = module(x)
            if i in self._taps:
                taps.append(x)
        return tuple(taps)


class GradualStyleEncoder(_PyramidEncoder):
    """pSp's encoder: every style predicted freely by its own head (the W+ baseline)."""

    def codes_from_features(self, feats):
        c1, c2, c3 = feats
        p2 = upsample_add(c3, self.latlayer1(c2))
        p1 = upsample_add(p2, self.latlayer2(c1))
        codes = []
        for i, head in enumerate(self.styles):
            codes.append(head(c3 if i < self.coarse_ind else p2 if i < self.middle_ind else p1))
        return torch.stack(codes, dim=1)

    def forward(self, x):
        return self.codes_from_features(self.features(x))


class Encoder4Editing(_PyramidEncoder):
    """e4e's encoder: codes = w0 (head 0, repeated to every style) + offsets for styles 1..stage.

    `stage` (set with set_stage) is the progressive-training stage K: offsets 1..min(K, n_styles-1) are
    open; "inference" opens them all. It starts at "inference", as the official model does, and is not
    part of the state dict.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__(cfg)
        self.stage: int | str = INFERENCE

    def set_stage(self, stage: int | str) -> None:
        if stage != INFERENCE and (isinstance(stage, bool) or not isinstance(stage, int) or stage < 0):
            raise E4EError(f"encoder stage must be an int >= 0 or {INFERENCE!r}, got {stage!r}")
        self.stage = stage

    def n_open(self, stage: int | str) -> int:
        """How many offsets (styles 1..n) `stage` adds to w0: all of them at inference."""
        return self.n_styles - 1 if stage == INFERENCE else min(int(stage), self.n_styles - 1)

    @property
    def open_offsets(self) -> int:
        """How many offsets the current stage adds to w0."""
        return self.n_open(self.stage)

    def offset_mask(self, stage: int | str, device=None) -> torch.Tensor:
        """(n_styles,) float: 1 where the offset of a style is open at `stage`, 0 elsewhere (style 0 is w0)."""
        m = torch.zeros(self.n_styles, device=device)
        m[1:self.n_open(stage) + 1] = 1
        return m

    def closed_parameters(self, stage: int | str) -> list[nn.Parameter]:
        """The parameters that the stage-`stage` forward does not use (the reference forward leaves their
        .grad None): heads of closed offsets, and the lateral layers of pyramid levels no open offset reads."""
        n_open = self.n_open(stage)
        closed = [p for i in range(n_open + 1, self.n_styles) for p in self.styles[i].parameters()]
        if n_open < self.coarse_ind:
            closed += list(self.latlayer1.parameters())
        if n_open < self.middle_ind:
            closed += list(self.latlayer2.parameters())
        return closed

    def masked_codes(self, x, mask: torch.Tensor):
        """codes = w0 + mask_i * offset_i with every head computed: the same values as forward() at the
        stage `mask` encodes (offset_mask), from one graph for all stages (the trainer's impl="fast" compiles
        it once). Closed heads then get zero gradients where forward() gives None: the trainer drops them
        (closed_parameters) so the optimizer skips them as it does after forward()."""
        c1, c2, c3 = self.features(x)
        p2 = upsample_add(c3, self.latlayer1(c2))
        p1 = upsample_add(p2, self.latlayer2(c1))
        w0 = self.styles[0](c3)
        deltas = [torch.zeros_like(w0)] + [
            self.styles[i](c3 if i < self.coarse_ind else p2 if i < self.middle_ind else p1)
            for i in range(1, self.n_styles)]
        return w0.unsqueeze(1) + mask.to(w0.dtype)[None, :, None] * torch.stack(deltas, dim=1)

    def codes_from_features(self, feats):
        c1, c2, c3 = feats
        w0 = self.styles[0](c3)
        deltas = [torch.zeros_like(w0)]
        features = c3
        # Pyramid levels are computed only when an open offset needs them, as in the official loop.
        for i in range(1, self.open_offsets + 1):
            if i == self.coarse_ind:
                features = p2 = upsample_add(c3, self.latlayer1(c2))
            elif i == self.middle_ind:
                features = upsample_add(p2, self.latlayer2(c1))
            deltas.append(self.styles[i](features))
        deltas += [torch.zeros_like(w0)] * (self.n_styles - len(deltas))
        return w0.unsqueeze(1) + torch.stack(deltas, dim=1)

    def forward(self, x):
        return self.codes_from_features(self.features(x))


def build_encoder(cfg: EncoderConfig) -> _PyramidEncoder:
    return Encoder4Editing(cfg) if cfg.kind == "e4e" else GradualStyleEncoder(cfg)
