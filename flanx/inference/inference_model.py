"""A checkpoint on the mesh with jitted predict/score functions: what eval, infer and the notebooks call."""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np

from flanx.model import peft
from flanx.model.peft import frozen_base
from flanx.model.config import T5Config
from flanx.training import data, profiling, run_builder, steps


class InferenceModel:
  """Params on a mesh plus jitted predict/score functions over host numpy batches of a fixed size.

  A PEFT `config` (its method set, as the run trained) reads a PEFT run's checkpoint: its trained params on the
  base its metadata names (flanx.model.peft.frozen_base). Under prompt tuning every encoder input gets the prompt
  placeholders in front (flanx.model.peft), as in training. Setting `profiler`
  (flanx.training.profiling) traces chosen predict batches.
  """

  profiler = profiling.OFF

  def __init__(self, checkpoint_path: str | None, config: T5Config, batch_size: int, *,
               mesh: jax.sharding.Mesh | None = None, shardings: steps.Shardings | None = None, **decode_options):
    """`checkpoint_path` None: no params yet (set `.params`, e.g. the trainer's, or call load()); `mesh` and
    `shardings`: the trainer's (default: make_mesh() and the shardings of an inference-only state)."""
    self.config, self.batch_size = config, batch_size
    # gin: make_mesh.data / make_mesh.model, axis_rules.fsdp; the compile-only check builds the same (aot)
    setup = run_builder.build_inference(config, decode_options, mesh=mesh, shardings=shardings)
    self.mesh, self.shardings = setup.mesh, setup.shardings
    self._predict, self._score = setup.predict, setup.score
    self.params = None
    if checkpoint_path is not None:
      self.load(checkpoint_path)
    self._prompt_tokens = peft.prompt_length(config)

  def load(self, checkpoint_path: str) -> None:
    """Reads another checkpoint's params (the compiled predict/score functions are kept)."""
    self.params = None  # free the previous params first
    self.params = frozen_base.load_model_params(checkpoint_path, self.config, self.shardings.params,
                                                self.shardings.frozen)

  def _global(self, batch: Mapping[str, np.ndarray]) -> dict:
    # Every process holds the same full batch (eval data is not sharded by host): build global arrays from it.
    return {k: jax.make_array_from_callback(v.shape, self.shardings.batch, lambda i, v=v: v[i])
            for k, v in batch.items()}

  def predict(self, encoder_input_tokens: np.ndarray, batch_index: int = 0,
              prompt: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decoded tokens [rows, max_decode_length] (EOS, then 0s) and scores, for up to batch_size rows.

    With decode_options.return_all_decodes: [rows, n, max_decode_length] and [rows, n], best first. `prompt`
    (int [rows, <= max_decode_length], 0-padded) is a target prefix each row's decode continues.
    """
    encoder_input_tokens = peft.add_prompt_placeholders(encoder_input_tokens, self._prompt_tokens)
    batch = {'encoder_input_tokens': encoder_input_tokens, **({'prompt': prompt} if prompt is not None else {})}
    padded, n = data.pad_batch(batch, self.batch_size)
    with self.profiler.step(batch_index), self.mesh, steps.activation_rules(self.shardings):
      arrays = self._global(padded)
      tokens, scores = self._predict(self.params, arrays['encoder_input_tokens'], batch_index, arrays.get('prompt'))
      tokens, scores = np.asarray(tokens)[:n], np.asarray(scores)[:n]  # waits for the decode (inside a profile)
    return tokens, scores

  def score(self, batch: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example target log-likelihood, correct-token and target-token counts (teacher forced)."""
    keys = ('encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights')
    batch = {k: batch[k] for k in keys if k in batch}
    batch['encoder_input_tokens'] = peft.add_prompt_placeholders(batch['encoder_input_tokens'], self._prompt_tokens)
    padded, n = data.pad_batch(batch, self.batch_size)
    with self.mesh, steps.activation_rules(self.shardings):
      out = self._score(self.params, self._global(padded))
    return -np.asarray(out['loss'])[:n], np.asarray(out['num_correct'])[:n], np.asarray(out['weight_sum'])[:n]

