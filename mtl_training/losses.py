"""Per-task losses that honour partial labels.

Each returns a dict of named terms; a task with no label anywhere in the batch contributes no term
(absent from the dict) rather than a zero with a misleading gradient path, so weighting schemes
that look at loss ratios (DWA, GradNorm) never see fake values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mtl_perception.core.contracts import IGNORE_INDEX


def masked_cross_entropy(logits: Tensor, target: Tensor, has_seg: Tensor,
                         pixel_weight: Tensor | None = None) -> Tensor | None:
    """Mean CE over labelled pixels of frames with a seg label; None if there are none.

    logits [B, C, H, W], target [B, H, W] (255 = ignore), has_seg [B] bool, pixel_weight [B]
    (e.g. a lower weight for pseudo-labelled frames).
    """
    valid = (target != IGNORE_INDEX) & has_seg.view(-1, 1, 1)
    if not bool(valid.any()):
        return None
    tgt = torch.where(valid, target, torch.zeros_like(target))
    ce = F.cross_entropy(logits.float(), tgt, reduction="none")  # [B, H, W]
    w = valid.float()
    if pixel_weight is not None:
        w = w * pixel_weight.view(-1, 1, 1).to(w.dtype)
    return (ce * w).sum() / w.sum().clamp_min(1e-6)


DEPTH_LOSSES = ("l1", "log_l1")
LOG_FLOOR_M = 1e-3  # log_l1 reads predictions below 1 mm as 1 mm (a sigmoid head never is 0)


def masked_l1(pred: Tensor, target: Tensor, has_depth: Tensor,
              frame_weight: Tensor | None = None, log: bool = False) -> Tensor | None:
    """Mean |pred - target| over valid depth pixels (target > 0) of frames with depth; or None.

    pred, target [B, 1, H, W] metres; has_depth [B] bool; frame_weight [B] (e.g. a lower weight
    for pseudo-depth frames). `log`: |log pred - log target| instead, the relative error that
    abs rel and delta1 score (metric L1 weighs a 10 % miss at 8 m eight times one at 1 m).
    """
    valid = (target > 0) & has_depth.view(-1, 1, 1, 1)
    if not bool(valid.any()):
        return None
    if log:
        safe = torch.where(valid, target, torch.ones_like(target))  # no log(0) off the mask
        err = (pred.float().clamp_min(LOG_FLOOR_M).log() - safe.log()).abs()
    else:
        err = (pred.float() - target).abs()  # [B, 1, H, W]
    if frame_weight is None:
        return err[valid].mean()
    w = valid.float() * frame_weight.view(-1, 1, 1, 1).to(err.dtype)
    return (err * w).sum() / w.sum().clamp_min(1e-6)


def depth_frame_weights(batch: dict, pseudo_weight: float) -> Tensor | None:
    """Per-frame weight: 1 for measured depth, `pseudo_weight` for teacher pseudo-depth."""
    sources = batch.get("depth_source")
    if sources is None or pseudo_weight == 1.0:
        return None
    return torch.tensor([pseudo_weight if s == "pseudo" else 1.0 for s in sources])


def seg_pixel_weights(batch: dict, pseudo_weight: float) -> Tensor | None:
    """Per-frame weight: 1 for ground truth, `pseudo_weight` for pseudo-labels."""
    sources = batch.get("seg_source")
    if sources is None or pseudo_weight == 1.0:
        return None
    return torch.tensor([pseudo_weight if s == "pseudo" else 1.0 for s in sources])


def task_losses(pred: dict[str, Tensor], batch: dict, pseudo_weight: float = 1.0,
                depth_loss: str = "l1") -> dict[str, Tensor]:
    """{task: loss} for the tasks that the model predicts and the batch labels; depth by
    `depth_loss` (DEPTH_LOSSES: l1 in metres, or log_l1)."""
    if depth_loss not in DEPTH_LOSSES:
        raise ValueError(f"Unknown depth loss '{depth_loss}' (available: "
                         f"{', '.join(DEPTH_LOSSES)})")
    terms: dict[str, Tensor] = {}
    if "seg" in pred:
        w = seg_pixel_weights(batch, pseudo_weight)
        if w is not None:
            w = w.to(pred["seg"].device)
        loss = masked_cross_entropy(pred["seg"], batch["seg"],
                                    batch["has_seg"].to(pred["seg"].device), w)
        if loss is not None:
            terms["seg"] = loss
    if "depth" in pred:
        dw = depth_frame_weights(batch, pseudo_weight)
        loss = masked_l1(pred["depth"], batch["depth"], batch["has_depth"].to(pred["depth"].device),
                         None if dw is None else dw.to(pred["depth"].device),
                         log=depth_loss == "log_l1")
        if loss is not None:
            terms["depth"] = loss
    return terms


# -- cross-task terms (METHOD.md B) -------------------------------------------------------------
XTC_MODES = ("consistency", "alignment")


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Mean over pixels of sum_c p_c (log p_c - log q_c) = KL(p || q); [B, C, H, W] each.

    The paper's transferred-segmentation loss (its eq. 13) is the cross-entropy -sum p log q with
    the other head's softmax p as target. Its target is detached, so the entropy of p is a
    constant: subtracting it leaves every gradient of eq. 13 unchanged and makes the value 0
    exactly when the transferred prediction equals the direct one (a readable consistency gap).
    """
    log_q = F.log_softmax(logits.float(), dim=1)
    p = target_probs.float()
    return (torch.xlogy(p, p) - p * log_q).sum(dim=1).mean()


def cross_task_losses(pred: dict[str, Tensor], transferred: dict[str, Tensor], batch: dict,
                      mode: str = "consistency", pseudo_weight: float = 1.0
                      ) -> dict[str, Tensor]:
    """{task t: loss of the prediction transferred INTO t from the other task s}.

    consistency (XTC): target = the direct prediction of t, detached, so no gradient reaches it
    (the paper: "we do not backpropagate via the direct prediction"); the gradient goes into the
    transfer net and, through its input, into task s. Needs no label: every frame counts.
    alignment: target = the ground truth of t, on labelled pixels only (the paper's eq. 8).
    """
    if mode not in XTC_MODES:
        raise ValueError(f"Unknown loss.xtc_mode '{mode}' (available: {', '.join(XTC_MODES)})")
    terms: dict[str, Tensor] = {}
    if "seg" in transferred and "seg" in pred:
        if mode == "consistency":
            target = torch.softmax(pred["seg"].detach().float(), dim=1)  # [B, C, H, W]
            terms["seg"] = soft_cross_entropy(transferred["seg"], target)
        else:
            w = seg_pixel_weights(batch, pseudo_weight)
            loss = masked_cross_entropy(transferred["seg"], batch["seg"],
                                        batch["has_seg"].to(transferred["seg"].device),
                                        None if w is None else w.to(transferred["seg"].device))
            if loss is not None:
                terms["seg"] = loss
    if "depth" in transferred and "depth" in pred:
        if mode == "consistency":
            terms["depth"] = (transferred["depth"].float()
                              - pred["depth"].detach().float()).abs().mean()
        else:
            loss = masked_l1(transferred["depth"], batch["depth"],
                             batch["has_depth"].to(transferred["depth"].device))
            if loss is not None:
                terms["depth"] = loss
    return terms


def task_objectives(direct: dict[str, Tensor], cross: dict[str, Tensor],
                    lambdas: dict[str, float]) -> dict[str, Tensor]:
    """L_t = (1 - lambda_t) * direct_t + lambda_t * cross_t, per task (the paper's eq. 11).

    A task whose labels are missing from the batch keeps its cross-task term alone
    (lambda_t * cross_t): that is the training signal on unlabelled frames. A task with neither
    term is absent, as in `task_losses`.
    """
    out: dict[str, Tensor] = {}
    for t in dict.fromkeys([*direct, *cross]):
        lam = float(lambdas.get(t, 0.0))
        if t in direct and t in cross:
            out[t] = (1.0 - lam) * direct[t] + lam * cross[t]
        elif t in direct:
            out[t] = direct[t]
        elif lam > 0.0:
            out[t] = lam * cross[t]
    return out
