"""Losses pinned to the reference implementations' own formulas on fixed inputs.

Each test transcribes the reference computation (file and function named in its docstring) in plain torch and
compares it with ecgforge's, value and gradient.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgforge.augment.noise import GaussianNoise
from ecgforge.encoders.cpc import CPC
from ecgforge.encoders.resnet1d import ResNet1d
from ecgforge.objectives.cpc import CPCObjective
from ecgforge.objectives.losses import cmsc_loss, sinkhorn
from ecgforge.objectives.moco import MoCo
from ecgforge.objectives.swav import SwAV
from tests.components import make

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
    enc = make(CPC, frontend="linear", features=[8, 8], strides=[2, 2], kernel_sizes=[2, 2], hidden=6, lstm_layers=1)
    x = torch.randn(3, 12, 64)
    for same_seq in (True, False):
        obj = CPCObjective(enc, nn.Sequential(), form="single_step", n_steps=3, n_negatives=5, negatives_from_same_seq_only=same_seq)
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


# -------------------------------------------------------------------------------------------- SwAV


def ess_sinkhorn(Q: Tensor, nmb_iters: int) -> Tensor:  # noqa: N803 - the reference's names
    """hhi-aml/ecg-selfsupervised ``custom_swav_bolts.py``, ``CustomSwAV.sinkhorn`` (gpus = 0)."""
    with torch.no_grad():
        Q = Q.clone()
        Q /= torch.sum(Q)
        K, B = Q.shape  # noqa: N806
        r = torch.ones(K) / K
        c = torch.ones(B) / B
        for _ in range(nmb_iters):
            u = torch.sum(Q, dim=1)
            Q *= (r / u).unsqueeze(1)
            Q *= (c / torch.sum(Q, dim=0)).unsqueeze(0)
        return (Q / torch.sum(Q, dim=0, keepdim=True)).t().float()


def ess_swav_step(embedding: Tensor, output: Tensor, prototypes: Tensor, queue: Tensor | None, bs: int,
                  crops_for_assign: list[int], nmb_crops: int, epsilon: float, temperature: float,
                  iters: int) -> Tensor:
    """``CustomSwAV.shared_step`` from step 3 on (``nmb_crops`` = 7 as ``cli_main`` passes it, so the views
    predicted are ``arange(nmb_crops - 1)`` minus the assigning one and the divisor is ``nmb_crops - 1``);
    ``queue`` is updated in place, ``use_the_queue`` folded into its last-row test."""
    embedding = embedding.detach()
    loss = 0
    for i, crop_id in enumerate(crops_for_assign):
        with torch.no_grad():
            out = output[bs * crop_id: bs * (crop_id + 1)]
            if queue is not None:
                if not torch.all(queue[i, -1, :] == 0):
                    out = torch.cat((torch.mm(queue[i], prototypes.t()), out))
                queue[i, bs:] = queue[i, :-bs].clone()
                queue[i, :bs] = embedding[crop_id * bs: (crop_id + 1) * bs]
            q = torch.exp(out / epsilon).t()
            q = ess_sinkhorn(q, iters)[-bs:]
        subloss = 0
        for v in np.delete(np.arange(np.sum(nmb_crops - 1)), crop_id):
            p = torch.softmax(output[bs * v: bs * (v + 1)] / temperature, dim=1)
            subloss -= torch.mean(torch.sum(q * torch.log(p), dim=1))
        loss += subloss / (np.sum(nmb_crops) - 1)
    return loss / len(crops_for_assign)


def test_sinkhorn_equals_ess() -> None:
    torch.manual_seed(0)
    scores = F.normalize(torch.randn(10, 4), dim=1) @ F.normalize(torch.randn(7, 4), dim=1).T  # (N=10, K=7)
    codes = sinkhorn(scores, 0.05, 3)
    torch.testing.assert_close(codes, ess_sinkhorn(torch.exp(scores / 0.05).t(), 3))
    torch.testing.assert_close(codes.sum(1), torch.ones(10))


def test_swav_forward_equals_ess_shared_step_with_its_queue() -> None:
    """Three forwards with a queue of two batches: the first two fill it, the third uses it (ESS waits until
    its last row is set). Loss and gradients equal the ESS step's on the same views."""
    torch.manual_seed(0)
    enc = make(ResNet1d, depth=18, width=4)
    b, v = 4, 6
    obj = SwAV(enc, make(GaussianNoise, std_mv=0.1), n_views=v, n_prototypes=5, projector_hidden=16, projector_dim=8,
               queue_length=2 * b)
    ref_queue = torch.zeros(2, 2 * b, 8)
    x = torch.randn(b, 12, 200)
    for step in range(3):
        torch.manual_seed(100 + step)
        loss, _ = obj({"x": x}, "encoder")
        grads = torch.autograd.grad(loss, list(enc.parameters()))
        torch.manual_seed(100 + step)  # the same views, through the same (already normalised) prototypes
        views = torch.cat([obj.augment(x) for _ in range(v)])
        emb = F.normalize(obj.projector(enc(views)), dim=1)
        w = obj.prototypes.weight
        ref = ess_swav_step(emb, emb @ w.t(), w.detach(), ref_queue, b, [0, 1], 7, 0.05, 0.1, 3)
        torch.testing.assert_close(loss, ref)
        for a, g in zip(grads, torch.autograd.grad(ref, list(enc.parameters())), strict=True):
            # same formula, float32 sums in another order: conv-weight grads differ by ~1e-5
            torch.testing.assert_close(a, g, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(obj.queue, ref_queue)
        obj.on_step_end(step + 1, 3)
    assert not torch.all(ref_queue[:, -1] == 0)  # the third step did use a full queue


def test_swav_prototypes_frozen_for_the_first_steps() -> None:
    torch.manual_seed(0)
    obj = SwAV(make(ResNet1d, depth=18, width=4), nn.Sequential(), n_views=2, n_prototypes=5, projector_hidden=16, projector_dim=8,
               freeze_prototypes_steps=2)
    x = torch.randn(4, 12, 200)
    for step in range(3):
        obj.zero_grad(set_to_none=True)
        obj({"x": x}, "encoder")[0].backward()
        assert (obj.prototypes.weight.grad is None) == (step < 2)
        obj.on_step_end(step + 1, 3)
    torch.testing.assert_close(obj.prototypes.weight.norm(dim=1), torch.ones(5))


# -------------------------------------------------------------------------------------------- MoCo


def test_moco_equals_ess_forward_queue_and_momentum_update() -> None:
    """ESS ``custom_moco_bolts.py``: ``CustomMoCo.forward`` (logits ``[q·k, q·queue] / T``, queue stored
    (dim, K)), ``training_step`` (cross-entropy, label 0), ``_dequeue_and_enqueue`` (pointer wrapping around a
    queue of 10 with batches of 4) and ``_momentum_update_key_encoder`` (parameters only)."""
    torch.manual_seed(0)
    b, size, t, m = 4, 10, 0.2, 0.9
    obj = MoCo(make(ResNet1d, depth=18, width=4), make(GaussianNoise, std_mv=0.1), temperature=t, momentum=m, queue_length=size,
               projector_hidden=16, projector_dim=8)
    ref_queue = obj.queue.t().clone()  # ESS layout (emb_dim, num_negatives)
    ref_ptr = 0
    x = torch.randn(b, 12, 200)
    opt = torch.optim.SGD(obj.param_groups()["encoder"], lr=0.1)
    for step in range(4):
        key_before = [p.clone() for p in obj._key_params()]
        torch.manual_seed(10 + step)
        loss, _ = obj({"x": x}, "encoder")
        torch.manual_seed(10 + step)
        img_q, img_k = obj.augment(x), obj.augment(x)
        with torch.no_grad():
            q = F.normalize(obj.projector(obj.encoder(img_q)), dim=1)
            k = F.normalize(obj.key_projector(obj.key_encoder(img_k)), dim=1)
        l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", [q, ref_queue.clone().detach()])
        logits = torch.cat([l_pos, l_neg], dim=1) / t
        torch.testing.assert_close(loss, F.cross_entropy(logits, torch.zeros(b, dtype=torch.long)))
        remainder = ref_queue[:, ref_ptr:ref_ptr + b].shape[1]
        if remainder < b:
            ref_queue[:, -remainder:] = k.T[:, :remainder]
            ref_queue[:, :b - remainder] = k.T[:, remainder:]
            ref_ptr = b - remainder
        else:
            ref_queue[:, ref_ptr:ref_ptr + b] = k.T
            ref_ptr = (ref_ptr + b) % size
        torch.testing.assert_close(obj.queue.t(), ref_queue)
        assert int(obj.queue_ptr) == ref_ptr
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.on_step_end(step + 1, 4)
        online = [*obj.encoder.parameters(), *obj.projector.parameters()]
        for pk, before, pq in zip(obj._key_params(), key_before, online, strict=True):
            torch.testing.assert_close(pk, before * m + pq.detach() * (1.0 - m))
    assert all(p.grad is None for p in obj._key_params())
