"""Helpers for the course "Fine-tuning, LoRA and model sovereignty"."""
