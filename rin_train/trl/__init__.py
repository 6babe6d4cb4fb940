"""The TRL engine: GRPO on one machine (TRL's GRPOTrainer + peft LoRA).

It owns the trainer wiring only: fake-quantized rollouts with noise switched on
for generation and off for the policy update, validation at the run's precision
(LoRA separate, and merged at the final step), checkpoints and resume. Quantization,
noise, evaluation and the run directory come from the rin_train core.
"""
