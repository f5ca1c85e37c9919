"""Smoothed versions of non-differentiable functions, each with a temperature K.

Each smoothed function is differentiable everywhere and converges to its exact counterpart as
K → ∞; its docstring states how fast. The common root is the log-sum-exp: K⁻¹·log Σ exp(K·xᵢ) is a
smooth max, its gradient softmax(K·x) is a smooth one-hot of the argmax, and the two-term case
K⁻¹·log(exp(0) + exp(K·x)) = softplus(K·x)/K is a smooth ReLU. Accuracy and F1 count correct
predictions, a step function of the logits; their smooth versions count with softmax(K·logits)
probabilities instead, so they can be trained on directly (scripts/train_classifier.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_max(x: torch.Tensor, K: float, dim: int = -1) -> torch.Tensor:
    """K⁻¹·logsumexp(K·x): max x ≤ smooth_max ≤ max x + log(n)/K for n entries along `dim`
    (equality on the right when all entries are equal)."""
    return torch.logsumexp(K * x, dim=dim) / K


def smooth_min(x: torch.Tensor, K: float, dim: int = -1) -> torch.Tensor:
    """−smooth_max(−x): min x − log(n)/K ≤ smooth_min ≤ min x."""
    return -smooth_max(-x, K, dim)


def soft_onehot(x: torch.Tensor, K: float, dim: int = -1) -> torch.Tensor:
    """softmax(K·x), the gradient of smooth_max. With a unique maximum and a gap Δ to the runner-up,
    each other entry is ≤ exp(−K·Δ), so the L1 distance to onehot(argmax) is ≤ 2(n−1)·exp(−K·Δ)."""
    return torch.softmax(K * x, dim=dim)


def soft_argmax(x: torch.Tensor, K: float, dim: int = -1) -> torch.Tensor:
    """Σᵢ i·softmax(K·x)ᵢ, the expected index: |soft_argmax − argmax| ≤ (n−1)²·exp(−K·Δ)
    (Δ as in soft_onehot)."""
    p = soft_onehot(x, K, dim)
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    index = torch.arange(x.shape[dim], device=x.device, dtype=p.dtype).view(shape)
    return (p * index).sum(dim)


def smooth_step(x: torch.Tensor, K: float) -> torch.Tensor:
    """sigmoid(K·x), the smoothed Heaviside step 1[x > 0] = softmax(K·[x, 0])₀:
    |smooth_step − step| ≤ exp(−K·|x|)."""
    return torch.sigmoid(K * x)


def smooth_relu(x: torch.Tensor, K: float) -> torch.Tensor:
    """softplus(K·x)/K = K⁻¹·log(1 + exp(K·x)), the smooth max of (0, x):
    0 ≤ smooth_relu − relu ≤ log(2)/K, the worst case at x = 0."""
    return F.softplus(K * x) / K


def smooth_abs(x: torch.Tensor, K: float) -> torch.Tensor:
    """√(x² + K⁻²): 0 < smooth_abs − |x| ≤ 1/K, the worst case at x = 0; its slope x/√(x² + K⁻²)
    is finite everywhere."""
    return torch.sqrt(x * x + 1.0 / K**2)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose argmax is the label."""
    return (logits.argmax(-1) == labels).float().mean()


def smooth_accuracy(logits: torch.Tensor, labels: torch.Tensor, K: float = 1.0) -> torch.Tensor:
    """Expected accuracy when predicting class c with probability softmax(K·logits)_c. Where each
    row's argmax is unique with gap Δ, |smooth_accuracy − accuracy| ≤ (C−1)·exp(−K·Δ)."""
    p = soft_onehot(logits.float(), K)
    return p.gather(-1, labels[:, None]).mean()


def f1_from_probs(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Macro F1 from (soft) class assignments probs (N×C, rows summing to 1): per class
    TP = Σ p_c·[y = c], FP = Σ p_c·[y ≠ c], FN = Σ (1 − p_c)·[y = c], F1_c = 2TP/(2TP + FP + FN),
    averaged over all C classes. A class never present nor predicted has 0/0 and counts as 0
    (sklearn's labels=range(C), zero_division=0)."""
    y = F.one_hot(labels, probs.shape[-1]).to(probs.dtype)
    tp = (probs * y).sum(0)
    fp = (probs * (1 - y)).sum(0)
    fn = ((1 - probs) * y).sum(0)
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-12), torch.zeros_like(denom)).mean()


def macro_f1(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Exact macro F1 of the argmax predictions."""
    return f1_from_probs(F.one_hot(logits.argmax(-1), logits.shape[-1]).float(), labels)


def smooth_macro_f1(logits: torch.Tensor, labels: torch.Tensor, K: float = 1.0) -> torch.Tensor:
    """Macro F1 with soft counts from softmax(K·logits); in [0, 1] (2TP ≤ 2TP + FP + FN) and equal
    to macro_f1 when the probabilities are one-hot, which they approach as K → ∞."""
    return f1_from_probs(soft_onehot(logits.float(), K), labels)
