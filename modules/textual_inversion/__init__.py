"""Textual-inversion embeddings (A1111's module path: `modules.textual_inversion.textual_inversion`)."""
