"""Validation: greedy, noise-free, under the training quantization; strict and flexible accuracy.

The caller guarantees the model is the quantized policy with clean weights
(`rin_train.trl.engine` asserts no noise is applied); the result carries the precision
label it was measured under, so no accuracy ever exists without its quant mode
(DESIGN.md lesson 5).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import torch

from rin_train.rewards import flexible_reward, strict_reward
from rin_train.shared_prefill import shared_prefill
from rin_train.tasks import Example, prompt_text
from srdd.threads import torch_threads


def evaluate(model, tokenizer, examples: list[Example], *, max_new_tokens: int, quant_label: str,
             eval_lora: str = "separate", batch_size: int = 16, heartbeat: Callable[[], None] | None = None,
             shared_prefix: bool = False) -> dict:
    """{'accuracy' (strict), 'accuracy_flexible', 'eval_samples', 'eval_quant', 'eval_lora', 'per_problem'}
    over `examples`; 'per_problem' = {'strict': [bool], 'flexible': [bool]} in `examples` order (the caller
    stores it apart from the metrics, rin_train.outcomes), and each accuracy is exactly the mean of its list.

    `eval_lora` labels how the caller set up the LoRA ("separate": the fp branch beside the quantized
    base, as trained; "merged": merged into the weights and re-quantized, as deployed). `shared_prefix`
    prefills each batch's common prompt prefix (the chat template's) once: faster, but equal to the plain
    prefill only up to float rounding (rin_train.shared_prefill).

    With more than one batch, batches run side by side, one per thread of torch's (each on one thread: a
    greedy batch's decode steps are too small to keep two busy, srdd.threads.small_gemm_threads). A batch
    computes the same bits on one thread as alone (tests/rin_train/test_evaluate.py); on the demo's 64
    problems, 2 batches of 32 on 2 cores took 18-19 s against 33-34 s one after another."""
    if eval_lora not in ("separate", "merged"):
        raise ValueError(f"eval_lora must be 'separate' or 'merged', got {eval_lora!r}")
    from transformers import GenerationConfig

    if not examples:
        raise ValueError("validation needs at least one example")
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    eos = tokenizer.eos_token_id
    gen = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=eos, temperature=None, top_p=None, top_k=None)
    batches = [examples[start:start + batch_size] for start in range(0, len(examples), batch_size)]
    # tokenized here, not in the workers: a fast tokenizer's padding settings are state shared between calls
    encoded = [tokenizer([prompt_text(tokenizer, e) for e in chunk], return_tensors="pt", padding=True,
                         add_special_tokens=False) for chunk in batches]
    workers = min(len(batches), torch.get_num_threads())

    def greedy(enc) -> torch.Tensor:
        with torch.no_grad():  # grad mode is per thread; the thread count (torch's, global) is inherited
            return model.generate(**enc, generation_config=gen)[:, enc["input_ids"].shape[1]:]

    strict: list[bool] = []
    flexible: list[bool] = []
    try:
        with (torch_threads(1) if workers > 1 else nullcontext(), ThreadPoolExecutor(workers) as pool,
              shared_prefill(model, split_prefix=shared_prefix)):
            for chunk, out in zip(batches, (pool.map if workers > 1 else map)(greedy, encoded)):
                texts = tokenizer.batch_decode(out, skip_special_tokens=True)
                strict += [strict_reward(t, e.answer) == 1.0 for t, e in zip(texts, chunk)]
                flexible += [flexible_reward(t, e.answer) == 1.0 for t, e in zip(texts, chunk)]
                if heartbeat is not None:
                    heartbeat()
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    n = len(examples)
    return {"accuracy": sum(strict) / n, "accuracy_flexible": sum(flexible) / n, "eval_samples": n,
            "eval_quant": quant_label, "eval_lora": eval_lora, "per_problem": {"strict": strict, "flexible": flexible}}
