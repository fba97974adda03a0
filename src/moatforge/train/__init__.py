"""Distributed fine-tuning: Ray Data → Ray Train workers → DeepSpeed ZeRO, full or LoRA."""
