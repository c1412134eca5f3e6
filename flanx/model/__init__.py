"""The T5 model: its config, the Flax network (t5x param names, logical axes) and the decoding algorithms."""
