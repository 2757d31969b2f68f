"""The transformers of the zoo, written here (no downloads, no `transformers` package): GPT-2, BERT, ViT, Llama.

Each follows its reference implementation closely enough that the parameter count is exact (see the counts in
`models.zoo.registry`) and the module paths read like the Hugging Face / timm ones (`h.0.attn.c_attn`,
`bert.encoder.layer.0.attention.self.query`, `blocks.0.attn.qkv`, `layers.0.self_attn.q_proj`), so a profile's
layer names mean something to people who know those code bases. Attention is `F.scaled_dot_product_attention`
everywhere (the profiler counts it as the fused kernel a GPU runs). Inputs are token ids `(batch, seq_len)`,
except ViT (images). Outputs are logits; the loss is the profiler's (cross-entropy over the last dimension).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GPT2",
    "BertForPreTraining",
    "Llama",
    "VisionTransformer",
    "bert_base",
    "bert_large",
    "gpt2",
    "gpt2_large",
    "gpt2_medium",
    "gpt2_xl",
    "llama2_7b",
    "llama3_8b",
    "vit_b16",
]


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, seq, heads * head_dim) -> (batch, heads, seq, head_dim), a view."""
    b, s, _ = x.shape
    return x.view(b, s, heads, -1).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(batch, heads, seq, head_dim) -> (batch, seq, heads * head_dim) (a copy: the transpose is not contiguous)."""
    b, h, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, h * d)


# ---------------------------------------------------------------------------------------------------
# GPT-2 (Radford et al. 2019), layout of Hugging Face GPT2LMHeadModel (Linear instead of its Conv1D)
# ---------------------------------------------------------------------------------------------------


class GPT2Attention(nn.Module):
    """Causal self-attention: one fused qkv projection, SDPA with attention dropout, output projection."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.c_attn = nn.Linear(d_model, 3 * d_model)
        self.c_proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout)
        self.heads, self.dropout = heads, dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.c_attn(x).split(x.shape[-1], dim=2))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.c_proj(_merge_heads(y)))


class GPT2MLP(nn.Module):
    """d -> 4d, GELU (tanh approximation, GPT-2's "gelu_new"), 4d -> d, dropout."""

    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d_model, 4 * d_model)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class GPT2Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=1e-5)
        self.attn = GPT2Attention(d_model, heads, dropout)
        self.ln_2 = nn.LayerNorm(d_model, eps=1e-5)
        self.mlp = GPT2MLP(d_model, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """GPT-2 with its language-model head; the head's weight is the token embedding (tied, counted once)."""

    def __init__(self, layers: int, d_model: int, heads: int, vocab_size: int = 50257, max_positions: int = 1024,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(max_positions, d_model)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(GPT2Block(d_model, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model, eps=1e-5)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt2() -> GPT2:
    """GPT-2 small: 12 layers, d 768, 12 heads."""
    return GPT2(12, 768, 12)


def gpt2_medium() -> GPT2:
    """GPT-2 medium: 24 layers, d 1024, 16 heads."""
    return GPT2(24, 1024, 16)


def gpt2_large() -> GPT2:
    """GPT-2 large: 36 layers, d 1280, 20 heads."""
    return GPT2(36, 1280, 20)


def gpt2_xl() -> GPT2:
    """GPT-2 XL: 48 layers, d 1600, 25 heads."""
    return GPT2(48, 1600, 25)


# ---------------------------------------------------------------------------------------------------
# BERT (Devlin et al. 2019), layout of Hugging Face BertForPreTraining (masked-LM + next-sentence heads)
# ---------------------------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (token type 0: one segment)."""

    def __init__(self, vocab_size: int, d_model: int, max_positions: int, dropout: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, d_model)
        self.position_embeddings = nn.Embedding(max_positions, d_model)
        self.token_type_embeddings = nn.Embedding(2, d_model)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(torch.zeros_like(input_ids))
             + self.position_embeddings(positions))
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Bidirectional attention: separate query/key/value projections, SDPA with attention dropout."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.heads, self.dropout = heads, dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(proj(x), self.heads) for proj in (self.query, self.key, self.value))
        return _merge_heads(F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0))


class BertResidualOutput(nn.Module):
    """dense, dropout, then LayerNorm(. + residual): the post-LayerNorm end of both BERT sub-blocks."""

    def __init__(self, d_in: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_model)
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self = BertSelfAttention(d_model, heads, dropout)
        self.output = BertResidualOutput(d_model, d_model, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x), x)


class BertIntermediate(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, 4 * d_model)
        self.intermediate_act_fn = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class BertLayer(nn.Module):
    """Post-LayerNorm encoder layer: attention sub-block, then the d -> 4d -> d feed-forward sub-block."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = BertAttention(d_model, heads, dropout)
        self.intermediate = BertIntermediate(d_model)
        self.output = BertResidualOutput(4 * d_model, d_model, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(x)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, layers: int, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(d_model, heads, dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class BertPooler(nn.Module):
    """tanh(dense(first token)): the [CLS] summary the next-sentence head reads."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.activation = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x[:, 0]))


class BertModel(nn.Module):
    def __init__(self, layers: int, d_model: int, heads: int, vocab_size: int, max_positions: int,
                 dropout: float) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, d_model, max_positions, dropout)
        self.encoder = BertEncoder(layers, d_model, heads, dropout)
        self.pooler = BertPooler(d_model)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder(self.embeddings(input_ids))
        return x, self.pooler(x)


class BertLMPredictionHead(nn.Module):
    """Masked-LM head: dense, GELU, LayerNorm, then a decoder whose weight is the word embedding (tied)."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.transform_act_fn = nn.GELU()
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)
        self.decoder = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(self.transform_act_fn(self.dense(x))))


class BertPreTrainingHeads(nn.Module):
    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(d_model, vocab_size)
        self.seq_relationship = nn.Linear(d_model, 2)

    def forward(self, x: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.predictions(x), self.seq_relationship(pooled)


class BertForPreTraining(nn.Module):
    """BERT with the pretraining heads; returns (masked-LM logits over every token, next-sentence logits).

    Like Hugging Face, the masked-LM head runs on every position (the loss then ignores the unmasked ones);
    NVIDIA's implementation gathers the masked 15 % first, which saves most of the head's cost.
    """

    def __init__(self, layers: int, d_model: int, heads: int, vocab_size: int = 30522, max_positions: int = 512,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.bert = BertModel(layers, d_model, heads, vocab_size, max_positions, dropout)
        self.cls = BertPreTrainingHeads(d_model, vocab_size)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls(*self.bert(input_ids))


def bert_base() -> BertForPreTraining:
    """BERT-base: 12 layers, d 768, 12 heads, vocabulary 30522 (uncased WordPiece)."""
    return BertForPreTraining(12, 768, 12)


def bert_large() -> BertForPreTraining:
    """BERT-large: 24 layers, d 1024, 16 heads."""
    return BertForPreTraining(24, 1024, 16)


# ---------------------------------------------------------------------------------------------------
# ViT (Dosovitskiy et al. 2021), layout of timm's VisionTransformer (pre-LayerNorm, class token)
# ---------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """A 16x16/16 convolution: 224x224 -> 14x14 = 196 patch tokens."""

    def __init__(self, patch: int, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, d_model, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTAttention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class Mlp(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, eps=1e-6)
        self.attn = ViTAttention(d_model, heads)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-6)
        self.mlp = Mlp(d_model, 4 * d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT: patch tokens plus a class token, learned position embeddings, pre-LN blocks, a linear head.

    No dropout: the ImageNet-1k recipe of DeiT (Touvron et al. 2021), which trains ViT-B/16 from scratch
    without it (stochastic depth costs nothing to count).
    """

    def __init__(self, layers: int, d_model: int, heads: int, image_size: int = 224, patch: int = 16,
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch, d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2 + 1, d_model))
        self.blocks = nn.ModuleList(ViTBlock(d_model, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model, eps=1e-6)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def vit_b16(num_classes: int = 1000) -> VisionTransformer:
    """ViT-B/16 at 224x224: 12 layers, d 768, 12 heads, 197 tokens."""
    return VisionTransformer(12, 768, 12, num_classes=num_classes)


# ---------------------------------------------------------------------------------------------------
# Llama 2 / Llama 3 (Touvron et al. 2023; Meta 2024), layout of Hugging Face LlamaForCausalLM
# ---------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """x / rms(x) * weight (no mean, no bias)."""

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class RotaryEmbedding(nn.Module):
    """cos and sin of the rotary position angles for `seq_len` positions (computed per call, no weights)."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        angles = torch.outer(torch.arange(seq_len, device=self.inv_freq.device, dtype=torch.float32), self.inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, Hugging Face's half-split form: x cos + rotate_half(x) sin."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class LlamaAttention(nn.Module):
    """Causal attention with rotary positions and grouped-query heads (`kv_heads` < `heads`), no biases."""

    def __init__(self, d_model: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        head_dim = d_model // heads
        self.q_proj = nn.Linear(d_model, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(d_model, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, d_model, bias=False)
        self.heads, self.kv_heads = heads, kv_heads

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q = _rotate(_split_heads(self.q_proj(x), self.heads), cos, sin)
        k = _rotate(_split_heads(self.k_proj(x), self.kv_heads), cos, sin)
        v = _split_heads(self.v_proj(x), self.kv_heads)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv_heads != self.heads)
        return self.o_proj(_merge_heads(y))


class LlamaMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, kv_heads: int, hidden: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(d_model)
        self.self_attn = LlamaAttention(d_model, heads, kv_heads)
        self.post_attention_layernorm = RMSNorm(d_model)
        self.mlp = LlamaMLP(d_model, hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """A Llama decoder with an untied output head (no dropout: Llama trains without it)."""

    def __init__(self, layers: int, d_model: int, heads: int, kv_heads: int, hidden: int, vocab_size: int,
                 rope_theta: float) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, d_model)
        self.rotary_emb = RotaryEmbedding(d_model // heads, rope_theta)
        self.layers = nn.ModuleList(LlamaDecoderLayer(d_model, heads, kv_heads, hidden) for _ in range(layers))
        self.norm = RMSNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(idx)
        cos, sin = self.rotary_emb(idx.shape[1])
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def llama2_7b() -> Llama:
    """Llama-2-7B: 32 layers, d 4096, 32 heads (no GQA), SwiGLU 11008, vocabulary 32000, RoPE theta 1e4."""
    return Llama(32, 4096, 32, 32, 11008, 32000, 1e4)


def llama3_8b() -> Llama:
    """Llama-3-8B: 32 layers, d 4096, 32 heads with 8 key/value heads, SwiGLU 14336, vocabulary 128256,
    RoPE theta 5e5."""
    return Llama(32, 4096, 32, 8, 14336, 128256, 5e5)
