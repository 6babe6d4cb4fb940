"""Validation: greedy, no noise, under the training quantization, strict and flexible accuracy."""

from __future__ import annotations

import torch

from rin_train.rewards import flexible_reward, strict_reward
from rin_train.tasks import Example


def prompt_text(tokenizer, example: Example) -> str:
    return tokenizer.apply_chat_template(example.messages(), tokenize=False, add_generation_prompt=True)


def evaluate(model, tokenizer, examples: list[Example], *, max_new_tokens: int, batch_size: int = 16) -> dict:
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    strict = flexible = 0.0
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            enc = tokenizer([prompt_text(tokenizer, e) for e in chunk], return_tensors="pt", padding=True,
                            add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            strict += sum(strict_reward(t, e.answer) for t, e in zip(texts, chunk))
            flexible += sum(flexible_reward(t, e.answer) for t, e in zip(texts, chunk))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return {"accuracy": strict / len(examples), "accuracy_flexible": flexible / len(examples)}
