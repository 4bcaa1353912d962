"""W2V+CMSC+RLM's loss pinned to fairseq-signals' ``Wav2Vec2WithCMSCCriterion`` on fixed inputs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import torch
from torch import nn

from ecgforge.augment.leads import RandomLeadMask
from ecgforge.objectives.w2v_cmsc_rlm import W2VCMSCRLM
from tests.components import make
from tests.objectives.test_objectives import small_wav2vec2
from tests.objectives.test_reference_losses import fairseq_cmsc

ROOT = Path(__file__).resolve().parents[2]


def fairseq_aggregate(features: torch.Tensor) -> torch.Tensor:
    """Jwoo5/fairseq-signals ``fairseq_signals/models/wav2vec2/wav2vec2_cmsc.py``,
    ``Wav2Vec2CMSCModel.get_features(net_output, aggregate=True)`` without padding: ``features (B, T', D)``, the
    transformer output of the masked forward (``Wav2Vec2Model.forward(return_features=True)``), summed over
    time and divided by the count of its non-zero entries."""
    return torch.div(features.sum(dim=1), (features != 0).sum(dim=1))


def test_w2v_cmsc_rlm_loss_equals_fairseq_signals_wav2vec2_with_cmsc() -> None:
    """fairseq-signals ``fairseq_signals/criterions/wav2vec2_criterion.py``, ``Wav2Vec2WithCMSCCriterion.forward``
    (``cmsc_weights`` None, as in ``examples/w2v_cmsc/config/pretraining/w2v_cmsc_rlm.yaml``): the summed
    wav2vec 2.0 loss plus ``cmsc_loss * sample_size``, which fairseq divides by ``sample_size``, i.e.
    ``L_w2v + L_CMSC`` unweighted, L_CMSC being the segment-0 x segment-1 formula on the aggregated features of
    the *same* forward, rows alternating segment 0 / 1 per item, ``patient_id`` the group. Same random draws
    (lead masks, time masks, negatives) for ours and the transcription."""
    torch.manual_seed(0)
    obj = W2VCMSCRLM(small_wav2vec2(), nn.Sequential(), make(RandomLeadMask, p_lead=0.5), final_dim=32, n_negatives=20,
                     quantiser_entries=16)
    x = torch.randn(4, 2, 12, 500)
    record = torch.tensor([0, 1, 1, 2])  # items 1 and 2 come from one record: positives across items too
    batch = {"x": x, "patient": record, "record": record}
    torch.manual_seed(5)
    loss, logs = obj(batch, "encoder")

    torch.manual_seed(5)
    segments = obj.rlm(obj.augment(x.flatten(0, 1)))  # (2B, leads, T): item-major, segment 0 then 1
    w2v, _, features = obj.w2v_loss(segments)
    ref_cmsc = fairseq_cmsc(fairseq_aggregate(features), record.repeat_interleave(2), torch.tensor([0, 1] * 4))
    torch.testing.assert_close(logs["cmsc_loss"], ref_cmsc.detach())
    torch.testing.assert_close(loss, w2v + ref_cmsc)


def test_w2v_cmsc_rlm_recipe_uses_the_reference_weights() -> None:
    """``examples/w2v_cmsc/config/pretraining/w2v_cmsc_rlm.yaml``: ``loss_weights: [0.1, 10]`` (diversity,
    feature penalty), ``mask_prob: 0.65``, ``final_dim: 256``, lead masking with ``mask_leads_prob: 0.5``;
    ``CMSCCriterionConfig.temp`` 0.1; no ``cmsc_weights`` (the two losses are added unweighted)."""
    ssl = tomllib.loads((ROOT / "recipes/papers/lead_agnostic/w2v_cmsc_rlm.toml").read_text())["ssl"]
    assert (ssl["diversity_weight"], ssl["feature_penalty_weight"]) == (0.1, 10.0)
    assert (ssl["mask_prob"], ssl["final_dim"], ssl["rlm"]["p_lead"]) == (0.65, 256, 0.5)
    assert (ssl["cmsc_temperature"], ssl["w2v_weight"], ssl["cmsc_weight"]) == (0.1, 1.0, 1.0)
