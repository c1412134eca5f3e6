"""Generation with the real model: jitted KV-cache decoding agrees with full forward passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flanx.model import network as model_lib
from flanx.inference import predict
from flanx.model.config import T5Config

CONFIG = T5Config(vocab_size=40, d_model=24, d_kv=6, num_heads=3, d_ff=32, num_encoder_layers=2,
                  num_decoder_layers=2)
EOS = 1
BATCH = 3


@pytest.fixture(scope='module')
def setup():
  params = model_lib.init_params(CONFIG, jax.random.key(3))
  rng = np.random.RandomState(0)
  tokens = rng.randint(2, CONFIG.vocab_size, (3, 9)).astype(np.int32)
  tokens[1, 6:] = 0  # padding in one row
  return params, jnp.asarray(tokens)


@pytest.fixture(scope='module')
def forward(setup):
  params, tokens = setup
  return jax.jit(lambda dec: model_lib.Transformer(CONFIG).apply({'params': params}, tokens, dec))


def full_forward_argmax(forward, batch, max_len, prompt=None):
  """Greedy decoding by re-running the whole model on the growing prefix (no cache); prompt tokens forced.

  The decoder is causal, so position i of a forward pass over a zero-padded prefix buffer sees only
  tokens 0..i: one fixed shape, one compilation.
  """
  out = np.zeros((batch, max_len), np.int32)
  done = np.zeros(batch, bool)
  for i in range(max_len):
    prefix = np.concatenate([np.zeros((batch, 1), np.int32), out[:, :-1]], axis=1)
    step = np.asarray(jnp.argmax(forward(jnp.asarray(prefix))[:, i], -1))
    forced = prompt[:, i] if prompt is not None and i < prompt.shape[1] else np.zeros(batch, np.int32)
    step = np.where(forced != 0, forced, step)
    out[:, i] = np.where(done, 0, step)
    done |= (step == EOS) & (forced == 0)
  return out


def teacher_forced_log_prob(forward, row, sequence, skip=0):
  """Sum of the model's log-probs of sequence[skip:] up to and including EOS, from one full forward pass."""
  seq = list(sequence)
  seq = seq[:seq.index(EOS) + 1] if EOS in seq else seq  # no EOS: it ran to the full length
  dec = np.zeros((BATCH, len(sequence)), np.int32)
  dec[row, 1:len(seq)] = seq[:-1]
  log_probs = np.asarray(jax.nn.log_softmax(forward(jnp.asarray(dec))[row].astype(jnp.float32)), np.float64)
  return sum(log_probs[j, t] for j, t in enumerate(seq) if j >= skip), len(seq)


@pytest.mark.slow
def test_greedy_with_cache_equals_argmax_of_full_forwards(setup, forward):
  params, tokens = setup
  max_len = 7
  got, _ = predict.make_predict_fn(CONFIG, mode='greedy', max_decode_length=max_len)(params, tokens, 0)
  np.testing.assert_array_equal(np.asarray(got), full_forward_argmax(forward, 3, max_len))


@pytest.mark.slow
def test_greedy_continues_a_decoder_prompt(setup, forward):
  params, tokens = setup
  prompt = np.array([[7, 9, 0], [0, 0, 0], [12, 0, 0]], np.int32)
  got, scores = predict.make_predict_fn(CONFIG, mode='greedy', max_decode_length=7)(params, tokens, 0,
                                                                                   jnp.asarray(prompt))
  got = np.asarray(got)
  np.testing.assert_array_equal(got, full_forward_argmax(forward, 3, 7, prompt))
  for r in range(3):
    want, _ = teacher_forced_log_prob(forward, r, got[r], skip=int((prompt[r] != 0).sum()))
    np.testing.assert_allclose(scores[r], want, rtol=1e-4)  # the prompt scores nothing


@pytest.mark.slow
def test_beam_one_hf_rule_without_length_penalty_equals_greedy(setup):
  params, tokens = setup
  greedy, _ = predict.make_predict_fn(CONFIG, mode='greedy', max_decode_length=7)(params, tokens, 0)
  beam, _ = predict.make_predict_fn(CONFIG, mode='beam', beam_size=1, alpha=0.0, beam_finish_rule='hf',
                                    max_decode_length=7)(params, tokens, 0)
  np.testing.assert_array_equal(np.asarray(beam), np.asarray(greedy))


@pytest.mark.slow
def test_all_beams_best_first_with_t5x_scores(setup, forward):
  """Every returned beam's score is its teacher-forced log-prob / ((5 + length) / 6)^alpha, best first."""
  params, tokens = setup
  alpha, max_len = 0.6, 6
  best, best_scores = predict.make_predict_fn(CONFIG, mode='beam', beam_size=4, alpha=alpha,
                                              max_decode_length=max_len)(params, tokens, 0)
  beams, scores = predict.make_predict_fn(CONFIG, mode='beam', beam_size=4, alpha=alpha, max_decode_length=max_len,
                                          return_all_decodes=True)(params, tokens, 0)
  beams, scores = np.asarray(beams), np.asarray(scores)
  assert beams.shape == (3, 4, max_len) and scores.shape == (3, 4)
  np.testing.assert_array_equal(beams[:, 0], np.asarray(best))
  np.testing.assert_array_equal(scores[:, 0], np.asarray(best_scores))
  assert np.all(np.diff(scores, axis=1) <= 0)
  checked = 0
  for r in range(3):
    for j in range(4):
      if scores[r, j] < -1e6 or EOS not in beams[r, j].tolist():
        continue  # a t5x filler slot, or an unfinished beam (raw log-prob)
      log_prob, length = teacher_forced_log_prob(forward, r, beams[r, j])
      np.testing.assert_allclose(scores[r, j], log_prob / ((5 + length) / 6) ** alpha, rtol=1e-4)
      checked += 1
  assert checked >= 3


@pytest.mark.slow
def test_sampling_seeded_several_decodes_with_model_scores(setup, forward):
  params, tokens = setup
  sample = predict.make_predict_fn(CONFIG, mode='sample', top_k=0, temperature=1.0, seed=5, max_decode_length=7,
                                   num_decodes=3, rescale_log_probs=False, return_all_decodes=True)
  a, scores = sample(params, tokens, 0)
  b, _ = sample(params, tokens, 0)
  c, _ = sample(params, tokens, 1)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a), np.asarray(c))
  a, scores = np.asarray(a), np.asarray(scores)
  assert a.shape == (3, 3, 7) and np.all(np.diff(scores, axis=1) <= 0)
  for r in range(3):
    for j in range(3):
      want, _ = teacher_forced_log_prob(forward, r, a[r, j])
      np.testing.assert_allclose(scores[r, j], want, rtol=1e-4)


@pytest.mark.slow
def test_sampling_defaults_follow_t5x(setup):
  params, tokens = setup
  default, scores = predict.make_predict_fn(CONFIG, mode='sample', max_decode_length=7)(params, tokens, 0)
  greedy, _ = predict.make_predict_fn(CONFIG, mode='greedy', max_decode_length=7)(params, tokens, 0)
  np.testing.assert_array_equal(np.asarray(default), np.asarray(greedy))  # t5x's default topk=1
  np.testing.assert_array_equal(np.asarray(scores), np.zeros(3))  # log-probs under a point mass
  assert predict.decode_options(mode='sample', top_p=0.9)['top_k'] == 0


@pytest.mark.parametrize('options,message', [
    (dict(top_k=40, top_p=0.9), 'at most one'),
    (dict(mode='beam', num_decodes=3), 'num_decodes'),
    (dict(mode='beam', beam_finish_rule='huggingface'), 'beam_finish_rule'),
    (dict(max_decode_steps=500), 'max_decode_steps'),
    (dict(mode='nucleus'), 'mode'),
])
def test_bad_decode_options_name_the_setting(options, message):
  with pytest.raises(ValueError, match=message):
    predict.decode_options(**options)


def test_trim_at_eos():
  assert predict.trim_at_eos(np.array([[5, 6, 1, 0], [7, 0, 0, 0], [1, 0, 0, 0]])) == [[5, 6], [7], []]
  assert predict.trim_at_eos(np.array([[[5, 1, 0], [6, 7, 1]]])) == [[[5], [6, 7]]]


@pytest.mark.slow
def test_infer_lines_hold_every_decode_with_scores_and_continue_target_prompts(tmp_path):
  import json
  import gin
  import seqio
  from flanx.inference import infer
  from flanx.training import checkpoints
  config = T5Config(vocab_size=260, d_model=16, d_kv=4, num_heads=2, d_ff=16, num_encoder_layers=1,
                    num_decoder_layers=1)
  params = jax.device_get(model_lib.init_params(config, jax.random.key(0)))
  checkpoints.write_params_checkpoint(str(tmp_path / 'run'), 0, params, {'step': 0})
  prompts = tmp_path / 'prompts.jsonl'
  prompts.write_text(json.dumps({'inputs': 'hello', 'targets': 'ab'}) + '\n' + json.dumps({'inputs': 'xyz'}) + '\n')
  vocabulary = seqio.ByteVocabulary()
  gin.clear_config()
  try:
    for key, value in (('mode', 'beam'), ('beam_size', 3), ('max_decode_length', 6)):
      gin.bind_parameter(f'decode_options.{key}', value)
    path = infer.infer(checkpoint_path=str(tmp_path / 'run'), output_dir=str(tmp_path / 'out'), batch_size=2,
                       task_feature_lengths={'inputs': 8, 'targets': 6}, model_config=config,
                       input_file=str(prompts), vocabulary=vocabulary, prompt_with_targets=True)
  finally:
    gin.clear_config()
  lines = [json.loads(line) for line in open(path)]
  tokens = np.zeros((2, 8), np.int32)
  for i, text in enumerate(['hello', 'xyz']):
    ids = vocabulary.encode(text) + [EOS]
    tokens[i, :len(ids)] = ids
  prompt = np.zeros((2, 6), np.int32)
  prompt[0, :2] = vocabulary.encode('ab')
  beams, scores = predict.make_predict_fn(config, mode='beam', beam_size=3, max_decode_length=6,
                                          return_all_decodes=True)(params, jnp.asarray(tokens), 0, jnp.asarray(prompt))
  for line, row_beams, row_scores in zip(lines, predict.trim_at_eos(beams), np.asarray(scores)):
    assert line['predictions'] == [vocabulary.decode(ids) for ids in row_beams]
    np.testing.assert_allclose(line['scores'], row_scores, rtol=1e-5)
    assert line['prediction'] == line['predictions'][0] and line['score'] == line['scores'][0]
  assert all(p.startswith('ab') for p in lines[0]['predictions'])  # the target prompt leads every beam
