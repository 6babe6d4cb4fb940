"""rin_train: quantized RL (GRPO) with scan-guided noise injection, trustworthy run directories."""
