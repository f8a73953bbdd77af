"""SmolLM2 (slow): batched greedy equals one-at-a-time on a real model. (The demo end to end, served by llama.cpp,
is tests/safety/test_demo_llamacpp.py.)"""

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from trustlab.models import load_causal_lm

    return load_causal_lm("smollm2-135m-instruct")


def test_smollm2_batched_greedy_equals_unbatched(smollm2):
    from trustlab.safety.backends.base import GenParams, messages_for
    from trustlab.safety.backends.hf import HFBackend

    model, tok = smollm2
    b4, b1 = HFBackend(model, tok, batch_size=4), HFBackend(model, tok, batch_size=1)
    prompts = [b4.render(messages_for(p)) for p in ("hi", "How do I bake a cake? Please explain.", "Name a colour.",
                                                      "Write a poem about the sea and the sky at night.")]
    params = GenParams(max_tokens=20, stop=("\n\n",))
    batched, single = b4.complete(prompts, params), b1.complete(prompts, params)
    assert [(c.text, c.tokens, c.finish_reason) for c in batched] == [(c.text, c.tokens, c.finish_reason)
                                                                      for c in single]
    for c in batched:  # token accounting: the text re-encodes to no more ids than were counted
        assert 0 < c.tokens <= 20 and len(tok.encode(c.text, add_special_tokens=False)) <= c.tokens
