"""T-Few losses and rank classification on hand-computed tiny cases."""

import math

import pytest
import tiny_models
import torch

from ia3engine.training.losses import (
    IGNORE,
    causal_alignment,
    causal_choice_batch,
    choice_probs,
    choice_scores,
    rank_classify,
    seq2seq_choice_targets,
    tfew_losses,
)


def _logits(prob_rows):
    """Logits whose softmax is exactly the given probabilities: (N, T, V)."""
    return torch.tensor(prob_rows, dtype=torch.float64).log()


# One example, two choices. Choice 0 = tokens [0, 1] with p = 0.5 then 0.8;
# choice 1 = token [1] with p = 0.1 (its second position is padding).
PROBS = [
    [[0.5, 0.5], [0.2, 0.8]],
    [[0.9, 0.1], [0.3, 0.7]],
]
TARGETS = torch.tensor([[0, 1], [1, IGNORE]])


def test_lm_loss_is_token_mean_nll_of_the_right_choice():
    losses = tfew_losses(_logits(PROBS), TARGETS, 2, torch.tensor([0]))
    assert losses.lm.item() == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2)


def test_unlikelihood_uses_the_tfew_epsilon_on_wrong_tokens_only():
    losses = tfew_losses(_logits(PROBS), TARGETS, 2, torch.tensor([0]))
    assert losses.unlikelihood.item() == pytest.approx(-math.log(1 - 0.1 + 0.01))


def test_unlikelihood_stays_finite_when_a_wrong_token_is_certain():
    probs = [[[0.5, 0.5]], [[1e-30, 1.0]]]
    losses = tfew_losses(_logits(probs), torch.tensor([[0], [1]]), 2, torch.tensor([0]))
    assert losses.unlikelihood.item() == pytest.approx(-math.log(0.01), rel=1e-6)


def test_length_norm_loss_is_softmax_over_mean_loglikelihoods():
    losses = tfew_losses(_logits(PROBS), TARGETS, 2, torch.tensor([0]))
    beta_right = (math.log(0.5) + math.log(0.8)) / 2
    beta_wrong = math.log(0.1)
    expected = -math.log(math.exp(beta_right) / (math.exp(beta_right) + math.exp(beta_wrong)))
    assert losses.length_norm.item() == pytest.approx(expected)
    assert losses.total.item() == pytest.approx(
        losses.lm.item() + losses.unlikelihood.item() + expected
    )


def test_losses_follow_the_right_choice_index():
    right_is_one = tfew_losses(_logits(PROBS), TARGETS, 2, torch.tensor([1]))
    assert right_is_one.lm.item() == pytest.approx(-math.log(0.1))
    # Wrong tokens are now choice 0's: -log(1 - 0.5 + eps) and -log(1 - 0.8 + eps), averaged.
    expected_ul = -(math.log(0.51) + math.log(0.21)) / 2
    assert right_is_one.unlikelihood.item() == pytest.approx(expected_ul)


def test_rank_classification_prefers_lowest_length_normalised_nll():
    # Choice 0: two tokens at p=0.5 (sum NLL 1.386, mean 0.693). Choice 1: one token at p=0.3
    # (NLL 1.204). Summed NLL would pick choice 1; the length-normalised score picks choice 0.
    probs = [[[0.5, 0.5], [0.5, 0.5]], [[0.7, 0.3], [0.5, 0.5]]]
    targets = torch.tensor([[0, 1], [1, IGNORE]])
    scores = choice_scores(_logits(probs), targets, 2)
    assert scores[0].tolist() == pytest.approx([math.log(2), -math.log(0.3)])
    assert rank_classify(scores).tolist() == [0]
    assert choice_probs(scores).sum().item() == pytest.approx(1.0)


def test_losses_batch_several_examples():
    probs = PROBS + PROBS
    targets = torch.cat([TARGETS, TARGETS])
    both = tfew_losses(_logits(probs), targets, 2, torch.tensor([0, 0]))
    one = tfew_losses(_logits(PROBS), TARGETS, 2, torch.tensor([0]))
    assert both.total.item() == pytest.approx(one.total.item())
    assert choice_scores(_logits(probs), targets, 2).shape == (2, 2)


def test_causal_choice_batch_marks_only_choice_tokens():
    batch = causal_choice_batch([[5, 6]], [[7], [8, 9]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [5, 6, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, 7, IGNORE], [IGNORE, IGNORE, 8, 9]]


def test_causal_choice_batch_drops_the_start_of_long_prompts():
    batch = causal_choice_batch([[1, 2, 3, 4, 5]], [[7, 8]], pad_id=0, max_length=4)
    assert batch["input_ids"].tolist() == [[4, 5, 7, 8]]


def test_seq2seq_targets_repeat_choices_per_example():
    targets = seq2seq_choice_targets(2, [[3, 1], [4, 5, 1]])
    assert targets.tolist() == [[3, 1, IGNORE], [4, 5, 1], [3, 1, IGNORE], [4, 5, 1]]


def test_causal_scores_match_scoring_each_choice_alone():
    model = tiny_models.gpt2()
    prompts, choices = [[5, 6, 7], [9, 10]], [[20], [30, 31, 32]]
    batch = causal_choice_batch(prompts, choices, pad_id=0)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    scores = choice_scores(*causal_alignment(logits, batch["labels"]), num_choices=2)
    for b, prompt in enumerate(prompts):
        for c, choice in enumerate(choices):
            ids = torch.tensor([prompt + choice])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
            nll = -sum(logp[len(prompt) - 1 + i, tok].item() for i, tok in enumerate(choice))
            assert scores[b, c].item() == pytest.approx(nll / len(choice), abs=1e-5)


def test_losses_give_gradients_to_the_logits():
    logits = _logits(PROBS).clone().requires_grad_(True)
    tfew_losses(logits, TARGETS, 2, torch.tensor([0])).total.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
