"""Losses pinned to the reference implementations' own formulas on fixed inputs.

Each test transcribes the reference computation (file and function named in its docstring) in plain torch and
compares it with ecgforge's, value and gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ecgforge.encoders.cpc import CPC
from ecgforge.objectives.cpc import CPCObjective
from ecgforge.objectives.losses import cmsc_loss

# --------------------------------------------------------------------------------------------- CPC


def ess_cpc_loss(input_encoded: Tensor, output: Tensor, steps_predicted: int, n_false_negatives: int,
                 negatives_from_same_seq_only: bool) -> tuple[Tensor, Tensor]:
    """hhi-aml/ecg-selfsupervised ``clinical_ts/cpc.py``, ``CPCModel.cpc_loss`` after ``self.forward``:
    ``input_encoded`` (bs, seq, features) latents, ``output`` (bs, seq, features) = ``self.proj(rnn output)``."""
    input_encoded_flat = input_encoded.reshape(-1, input_encoded.size(2))
    bs, seq = input_encoded.size()[:2]
    loss = torch.tensor(0, dtype=torch.float32)
    tp_cnt = torch.tensor(0, dtype=torch.int64)
    for i in range(seq - steps_predicted):
        positives = input_encoded[:, i + steps_predicted].unsqueeze(1)
        if negatives_from_same_seq_only:
            idxs = torch.randint(0, (seq - 1), (bs * n_false_negatives,))
        else:
            idxs = torch.randint(0, bs * (seq - 1), (bs * n_false_negatives,))
        idxs_seq = torch.remainder(idxs, seq - 1)
        idxs_seq2 = idxs_seq * (idxs_seq < (i + steps_predicted)).long() + (idxs_seq + 1) * (
            idxs_seq >= (i + steps_predicted)).long()
        if negatives_from_same_seq_only:
            idxs_batch = torch.arange(0, bs).repeat_interleave(n_false_negatives)
        else:
            idxs_batch = idxs // (seq - 1)
        idxs2_flat = idxs_batch * seq + idxs_seq2
        negatives = input_encoded_flat[idxs2_flat].view(bs, n_false_negatives, -1)
        candidates = torch.cat([positives, negatives], dim=1)
        preds = torch.sum(output[:, i].unsqueeze(1) * candidates, dim=-1)
        targs = torch.zeros(bs, dtype=torch.int64)
        tp_cnt += torch.sum(torch.argmax(preds, dim=-1) == targs)
        loss = loss + F.cross_entropy(preds, targs)
    return loss, tp_cnt.float() / bs / (seq - steps_predicted)


def test_cpc_single_step_equals_ess_cpc_loss() -> None:
    """Same seed, same negatives: ecgforge's vectorised loss equals ESS's per-position loop, for both ways of
    drawing negatives, in value, accuracy and the gradient of every parameter."""
    torch.manual_seed(0)
    enc = CPC(frontend="linear", features=[8, 8], strides=[2, 2], kernel_sizes=[2, 2], hidden=6, lstm_layers=1)
    x = torch.randn(3, 12, 64)
    for same_seq in (True, False):
        obj = CPCObjective(enc, [], form="single_step", n_steps=3, n_negatives=5, negatives_from_same_seq_only=same_seq)
        assert obj.proj.bias is None  # ESS bias_proj=False
        z = enc.encode(x)
        c = enc.context(z)
        torch.manual_seed(7)
        ours, acc = obj.single_step_loss(c, z)
        g_ours = torch.autograd.grad(ours, [*enc.parameters(), obj.proj.weight])
        z = enc.encode(x)
        torch.manual_seed(7)
        ref, ref_acc = ess_cpc_loss(z, obj.proj(enc.context(z)), 3, 5, same_seq)
        g_ref = torch.autograd.grad(ref, [*enc.parameters(), obj.proj.weight])
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(acc, ref_acc)
        for a, b in zip(g_ours, g_ref, strict=True):
            torch.testing.assert_close(a, b)


def test_cpc_negatives_come_from_every_other_position() -> None:
    """ESS draws distractors among all T'−1 positions other than the positive's (earlier ones too), in the own
    sequence with negatives_from_same_seq_only, else in any sequence, skipping position i+s everywhere."""
    from ecgforge.objectives.cpc import draw_negatives

    torch.manual_seed(0)
    b, t, s, k = 3, 10, 2, 400
    flat = draw_negatives(b, t, s, k, True, torch.device("cpu"))  # (t−s, B, K)
    seq, pos = flat // t, flat % t
    assert (seq == torch.arange(b)[None, :, None]).all()
    for i in range(t - s):
        assert set(pos[i].flatten().tolist()) == set(range(t)) - {i + s}
    flat = draw_negatives(b, t, s, k, False, torch.device("cpu"))
    seq, pos = flat // t, flat % t
    assert set(seq.flatten().tolist()) == set(range(b))
    for i in range(t - s):
        assert set(pos[i].flatten().tolist()) == set(range(t)) - {i + s}


# -------------------------------------------------------------------------------------------- CMSC


def fairseq_cmsc(logits: Tensor, patient_id: Tensor, segment: Tensor, temp: float = 0.1,
                 eps: float = 1e-8) -> Tensor:
    """Jwoo5/fairseq-signals ``fairseq_signals/criterions/cmsc_criterion.py``, ``CMSCCriterion.compute_loss``
    (single process): ``logits`` (N, D) of all segments, ``segment`` 0/1 per row, ``patient_id`` per row."""
    logits = logits / torch.max(logits.detach().norm(dim=-1).unsqueeze(-1), eps * torch.ones_like(logits))
    indices = torch.where(segment == 0)[0]
    mat1, p1 = logits[indices, :], patient_id[indices]
    indices = torch.where(segment == 1)[0]
    mat2, p2 = logits[indices, :], patient_id[indices]
    logits = torch.matmul(mat1, mat2.transpose(0, 1)) / temp
    target = torch.stack([p == p2 for p in p1])
    logits_1 = -F.log_softmax(logits, dim=-1)
    logits_2 = -F.log_softmax(logits.transpose(-2, -1), dim=-1)
    loss = logits_1[target].mean() / 2
    loss = loss + logits_2[target.transpose(-2, -1)].mean() / 2
    return loss


def test_cmsc_loss_equals_fairseq_signals_criterion() -> None:
    """Fixed inputs with a repeated group (two pairs of one record, as a long record gives): value and
    gradients equal the reference's, including its detached normalisation."""
    torch.manual_seed(0)
    z0 = torch.randn(6, 5, requires_grad=True)
    z1 = torch.randn(6, 5, requires_grad=True)
    groups = torch.tensor([0, 1, 2, 2, 3, 4])
    ours = cmsc_loss(z0, z1, groups, groups, 0.1)
    g_ours = torch.autograd.grad(ours, [z0, z1])
    # fairseq-signals' collator flattens each item's two segments in order: rows alternate segment 0, 1.
    flat = torch.stack([z0, z1], dim=1).flatten(0, 1)
    ref = fairseq_cmsc(flat, groups.repeat_interleave(2), torch.tensor([0, 1] * 6))
    g_ref = torch.autograd.grad(ref, [z0, z1])
    torch.testing.assert_close(ours, ref)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b)
    # The detached norm matters: the gradient differs from that of F.normalize.
    z0n, z1n = F.normalize(z0, dim=-1), F.normalize(z1, dim=-1)
    plain = (-(z0n @ z1n.T / 0.1).log_softmax(-1)[groups[:, None] == groups[None, :]].mean()
             - (z1n @ z0n.T / 0.1).log_softmax(-1)[groups[:, None] == groups[None, :]].mean()) / 2
    torch.testing.assert_close(plain, ours)
    assert not torch.allclose(torch.autograd.grad(plain, z0)[0], g_ours[0])
