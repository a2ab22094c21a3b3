"""Thin builders over transformers / tokenizers / gguf: tiny local models for tests and demos, GGUF export."""
