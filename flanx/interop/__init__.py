"""Other formats: Hugging Face folders (write, read, tokenizer, verification, model card) and t5x checkpoints."""
