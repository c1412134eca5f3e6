"""Using a trained model: batched decoding and scoring, seqio evaluation, and inference on prompt files."""
