"""Knowledge distillation: a fine-tuned teacher's output distribution trains a smaller student."""
