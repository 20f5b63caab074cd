"""Optimizers: AdamW with weight decay on matrices only, and Muon for the blocks' matrices with AdamW for the rest.

Every parameter group may carry an "lr_scale": the trainer sets group["lr"] = schedule(step) * lr_scale,
so groups with different peak learning rates follow one schedule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from lmforge.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed (weight matrices of linear layers) and not decayed (everything else).

    Embeddings are found by module (nn.Embedding), not by name, so a decoder tied to the token embedding
    counts as an embedding and is not decayed (as in GPT-2 / nanoGPT: decay only the 2-D matmul weights).
    """
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied tensor once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embedding_ids else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def block_matrices(model: nn.Module) -> list[Tensor]:
    """Weights of the nn.Linear layers inside the transformer blocks (the model's nn.ModuleList): Muon's share.

    Embeddings, heads, norms and biases stay with AdamW, as in the Muon reference implementation: an
    embedding row or a classifier is not a linear map between hidden states.
    """
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    found: dict[int, Tensor] = {}
    for blocks in lists:
        for m in blocks.modules():
            if isinstance(m, nn.Linear) and m.weight.requires_grad and id(m.weight) not in embedding_ids:
                found[id(m.weight)] = m.weight
    return list(found.values())


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> Optimizer:
    """The optimizer `cfg.optimizer` names, over `model`'s trainable parameters."""
    if cfg.optimizer == "muon":
        matrices = block_matrices(model)
        muon_ids = {id(p) for p in matrices}
        rest = [
            {**g, "params": [p for p in g["params"] if id(p) not in muon_ids]}
            for g in param_groups(model, cfg.weight_decay)
        ]
        scale = (cfg.muon_lr or cfg.lr) / cfg.lr
        groups = [{"params": matrices, "use_muon": True, "weight_decay": cfg.weight_decay, "lr_scale": scale}]
        groups += [{**g, "use_muon": False, "lr_scale": 1.0} for g in rest if g["params"]]
        return MuonWithAdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), momentum=cfg.muon_momentum)
    # fused: one kernel over all parameters (CPU and CUDA); its result does not depend on thread timing,
    # so runs stay bit-reproducible
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=True
    )


# --- Muon ----------------------------------------------------------------------------------------------------
# Quintic Newton-Schulz coefficients from the Muon reference implementation (Jordan et al. 2024): they
# maximise the slope at zero, so five iterations push every singular value into roughly [0.7, 1.2].
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: Tensor, steps: int = 5) -> Tensor:
    """The semi-orthogonal matrix nearest to g (U V^T of its SVD), approximately, by Newton-Schulz iteration."""
    a, b, c = NS_COEFFICIENTS
    # bf16 on GPUs, as the reference does (tensor cores); fp32 on CPUs, where bf16 matmuls are often slower
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the wide orientation: the Gram matrix x x^T is then the small one
        x = x.T
    x = x / (x.norm() + 1e-7)  # spectral norm <= Frobenius norm <= 1: inside the iteration's basin
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)  # a x + (b A + c A^2) x
    return (x.T if tall else x).to(g.dtype)


class MuonWithAdamW(Optimizer):
    """Muon for groups with use_muon=True, AdamW for the others: one optimizer, one state dict, one schedule.

    Muon (Jordan et al. 2024, kellerjordan.github.io/posts/muon): Nesterov momentum, then each 2-D update
    is replaced by its orthogonalization, so every direction of the matrix moves by a similar amount.
    The update is scaled by 0.2 * sqrt(max(rows, cols)), which gives it AdamW's typical RMS so that
    AdamW's learning rate and weight decay carry over (Liu et al. 2025, "Muon is Scalable for LLM
    Training"). Weight decay is decoupled in both halves: p <- p * (1 - lr * wd).
    """

    def __init__(
        self,
        params: list[dict],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        momentum: float = 0.95,
        ns_steps: int = 5,
    ) -> None:
        for group in params:
            if group.get("use_muon") and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon updates 2-D matrices only; put other parameters in a use_muon=False group")
        defaults = dict(
            lr=lr, betas=betas, eps=eps, momentum=momentum, ns_steps=ns_steps, weight_decay=0.0, use_muon=False
        )
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state dict saved by an optimizer with the same Muon / AdamW split of parameter groups."""
        saved = [bool(g.get("use_muon")) for g in state_dict["param_groups"]]
        ours = [g["use_muon"] for g in self.param_groups]
        if saved != ours:  # e.g. an AdamW state: its moments would land on Muon's matrices
            raise ValueError(
                f"saved parameter groups (use_muon={saved}) differ from this optimizer's ({ours}): "
                "was it saved by another optimizer?"
            )
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)

    def _muon_step(self, group: dict) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.mul_(mu).add_(p.grad)
            update = orthogonalize(p.grad.add(buf, alpha=mu), group["ns_steps"])  # Nesterov: g + mu * buf
            p.mul_(1.0 - lr * wd)
            p.add_(update, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))

    def _adamw_step(self, group: dict) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0  # a Python number: reading it never syncs a GPU (checkpoints keep it in JSON)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = state["step"]
            state["exp_avg"].lerp_(p.grad, 1.0 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
            denom = (state["exp_avg_sq"] / (1.0 - beta2**t)).sqrt_().add_(eps)
            p.mul_(1.0 - lr * wd)
            p.addcdiv_(state["exp_avg"], denom, value=-lr / (1.0 - beta1**t))
