"""Distillation losses as pure functions (no state, no process group, no device calls).

SEED's soft cross-entropy over a teacher queue, Hinton's knowledge distillation and the
FitNets hint on normalised feature maps. BINGO's loss is CsMl's multi-positive InfoNCE
(:func:`vipr.ssl.losses.weighted_info_nce`), unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def seed_loss(student: torch.Tensor, teacher: torch.Tensor, queue: torch.Tensor, student_temperature: float,
              teacher_temperature: float) -> torch.Tensor:
    """SEED's distillation loss (Fang et al., arXiv 2101.04731, eq. 3-4; ``seed/builder.py``).

    Over the set ``[t_i; Q]`` (the teacher embedding of the same image, then the queue),
    ``p_T = softmax([t_i.t_i, t_i.Q] / tau_T)`` and ``p_S = softmax([s_i.t_i, s_i.Q] / tau_S)``;
    ``L = -sum_j p_T,j log p_S,j``, averaged over N. Compute it in float32: at tau_T = 1e-4
    a bf16 similarity error of 4e-3 moves a teacher logit by 40.

    Args:
        student: (N, D) L2-normalised student embeddings.
        teacher: (N, D) L2-normalised teacher embeddings of the same views (no gradient).
        queue: (K, D) L2-normalised teacher embeddings of earlier batches.
        student_temperature: tau_S.
        teacher_temperature: tau_T.

    Returns:
        Scalar loss.

    Examples:
        >>> t = F.normalize(torch.randn(4, 8), dim=1)
        >>> float(seed_loss(t, t, F.normalize(torch.randn(16, 8), dim=1), 0.2, 1e-4)) > 0
        True
    """
    teacher, queue = teacher.detach(), queue.detach()

    def similarities(x: torch.Tensor) -> torch.Tensor:  # (N, 1 + K): [x_i.t_i, x_i.Q]
        return torch.cat([(x * teacher).sum(dim=1, keepdim=True), x @ queue.t()], dim=1)

    teacher_probs = F.softmax(similarities(teacher) / teacher_temperature, dim=1)
    return soft_cross_entropy(similarities(student) / student_temperature, teacher_probs)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-sum_j target_j log softmax(logits)_j``, averaged over N (SEED's ``tools/utils.py``).

    Args:
        logits: (N, C) student logits.
        target: (N, C) target distributions, rows summing to 1.
    """
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """Knowledge distillation (Hinton et al., arXiv 1503.02531, sec. 2; RepDistiller's ``DistillKL``).

    ``L = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)``:
    the KL term is summed over classes and averaged over all N images (``batchmean``); the
    T^2 keeps its gradient scale independent of T. The cross-entropy is averaged over the
    labelled images only (label -1: unlabelled) and absent when there are none.

    Args:
        student_logits: (N, C).
        teacher_logits: (N, C), no gradient.
        labels: (N,) int64 class indices, -1 where unknown.
        temperature: T.
        alpha: weight of the KL term in [0, 1].

    Returns:
        Scalar loss.

    Examples:
        >>> z = torch.randn(4, 3)
        >>> float(kd_loss(z, z, torch.full((4,), -1), 4.0, 0.9)) < 1e-6
        True
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    teacher_probs = F.softmax(teacher_logits.detach() / temperature, dim=1)
    loss = alpha * temperature ** 2 * F.kl_div(log_student, teacher_probs, reduction="batchmean")
    known = labels >= 0
    if alpha < 1 and bool(known.any()):
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits[known], labels[known])
    return loss


def hint_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """FitNets' hint (Romero et al., arXiv 1412.6550, eq. 3) on L2-normalised maps.

    ``L = mean_n || r_n / ||r_n|| - t_n / ||t_n|| ||^2`` with ``r`` the adapted student map and
    ``t`` the teacher's, each flattened over (C, H, W): ``2 - 2 cos(r_n, t_n)``, in [0, 4]. The
    normalisation makes the loss independent of the teacher's activation scale (FitNets'
    plain MSE needs a weight of 100 in RepDistiller); the student map is resized to the
    teacher's side by the caller.

    Args:
        student_map: (N, C, H, W) adapted student features.
        teacher_map: (N, C, H, W) teacher features, no gradient.

    Returns:
        Scalar loss.

    Examples:
        >>> m = torch.randn(2, 4, 3, 3)
        >>> float(hint_loss(m, 5 * m)) < 1e-6
        True
    """
    r = F.normalize(student_map.flatten(1), dim=1)
    t = F.normalize(teacher_map.detach().flatten(1), dim=1)
    return (r - t).pow(2).sum(dim=1).mean()
